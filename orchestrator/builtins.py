"""The built-in fallbacks a definition may name (`"fallback": {"builtin": "<name>"}`).

`create_app(builtins=...)` adds more. Apart from orchestrator/app.py so that code
embedding the engine (bench/, tests) gets them without the whole HTTP application.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.dag.engine import BuiltinFallback
from orchestrator.keyword_intent import keyword_intent_fallback

BUILTIN_FALLBACKS: Mapping[str, BuiltinFallback] = {"keyword_intent": keyword_intent_fallback}
