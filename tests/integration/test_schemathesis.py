"""schemathesis against the served OpenAPI document on a live service.

Every operation, with examples generated from the document (valid and invalid), sent
without a key and with each kind of key. Required: no 5xx, every status documented,
every body and header as documented, invalid input refused with a 4xx, and no
operation that needs a key answering without one. Bounded: a fixed number of
examples per operation, a derandomized (fixed-seed) run, and the per-test timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

from orchestrator.access.principal import Limits
from orchestrator.api.catalog import ENDPOINTS, Endpoint
from tests.integration.live import live_service
from tests.integration.principals import CALLERS, access_config, auth

EXAMPLES_PER_OPERATION = 25

CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
    st_checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    # Generous limits: a rate limit hit by the generated traffic would only hide the routes.
    limits = Limits(requests_per_s=10_000, burst=10_000, max_in_flight=1_000)
    with live_service(access=access_config(limits=limits), max_query_chars=200) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(live_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{live_url}/api/openapi.json")


# schemathesis's own pytest plugin needs pytest < 9 (it reads a private attribute that
# pytest 9 removed), so each operation is driven here with hypothesis directly.
def _runs() -> list[Any]:
    # Invalid input can only be made for operations that take some.
    runs = []
    for entry in ENDPOINTS:
        takes_input = entry.body is not None or "{" in entry.path or bool(entry.query)
        for mode in GenerationMode:
            if mode is GenerationMode.POSITIVE or takes_input:
                runs.append(
                    pytest.param(entry, mode, id=f"{entry.method} {entry.path} {mode.value}")
                )
    return runs


@pytest.mark.parametrize(("entry", "mode"), _runs())
def test_api_conforms_to_its_document(
    api_schema: Any, live_url: str, entry: Endpoint, mode: GenerationMode
) -> None:
    operation = api_schema[entry.path][entry.method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        for caller in (None, *CALLERS):
            headers = {
                k: v
                for k, v in (case.headers or {}).items()
                if k.lower() not in ("authorization", "x-api-key")
            }
            headers.update(auth(caller))
            case.call_and_validate(base_url=live_url, headers=headers, checks=CHECKS)

    check()
