"""`python -m orchestrator ...` is the `orchestrator` console script."""

from orchestrator.cli import main

raise SystemExit(main())
