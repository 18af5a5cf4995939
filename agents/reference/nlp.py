"""The reference NLP agent: `{"query": str}` in, `{"intent": Intent}` out (rule-based)."""

from __future__ import annotations

from agents.reference.contract import JSONObject, MalformedInput, UnusableInput
from agents.reference.parser import UnrecognisedQuery, parse_intent


class NlpAgent:
    """Turns a question into an intent (agents.reference.parser); 422 if it knows nothing in it."""

    name = "nlp"

    async def process(self, payload: JSONObject) -> JSONObject:
        query = payload.get("query")
        if not isinstance(query, str):
            raise MalformedInput("input 'query' must be a string")
        try:
            intent = parse_intent(query)
        except UnrecognisedQuery as exc:
            raise UnusableInput(str(exc), code="unrecognised_query") from exc
        return {"intent": dict(intent)}

    async def healthy(self) -> bool:
        return True
