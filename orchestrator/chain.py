"""The built-in NLP -> Data -> Viz chain, as an ordinary DAG definition.

Its special behaviour is expressed with node options every DAG has: the `nlp`
node falls back to the built-in keyword parser (workflow ends `degraded`); the
`viz` node is `on_failure: continue`, so the answer keeps the data without a
chart (`degraded`); a `data` failure stops the workflow (`failed`).
"""

from __future__ import annotations

import copy
from typing import Any

CHAIN_NAME = "chain"

CHAIN_DEFINITION: dict[str, Any] = {
    "name": CHAIN_NAME,
    "options": {"on_failure": "stop"},
    "nodes": [
        {
            "id": "nlp",
            "kind": "agent",
            "agent": "nlp",
            "input": {"query": "{{ inputs.query }}"},
            "fallback": {"builtin": "keyword_intent"},
        },
        {
            "id": "data",
            "kind": "agent",
            "agent": "data",
            "depends_on": ["nlp"],
            "input": {"intent": "{{ nlp.intent }}"},
        },
        {
            "id": "viz",
            "kind": "agent",
            "agent": "viz",
            "depends_on": ["nlp", "data"],
            "input": {
                "intent": "{{ nlp.intent }}",
                "columns": "{{ data.columns }}",
                "rows": "{{ data.rows }}",
            },
            "on_failure": "continue",
        },
    ],
    "output": {
        "intent": "{{ nlp.intent }}",
        "data": {"columns": "{{ data.columns }}", "rows": "{{ data.rows }}"},
        "chart": "{{ viz.spec }}",
    },
}


def chain_definition(*, timeout_s: float, max_parallel: int) -> dict[str, Any]:
    """The chain with this deployment's workflow deadline and parallelism."""
    definition = copy.deepcopy(CHAIN_DEFINITION)
    definition["options"].update(timeout_s=timeout_s, max_parallel=max_parallel)
    return definition
