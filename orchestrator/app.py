"""create_app: the aiohttp application, its resources opened and closed in cleanup_ctx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from agents.client import AgentClient
from agents.transport import AgentTransport, create_transport
from orchestrator.api.errors import error_middleware
from orchestrator.api.routes import routes
from orchestrator.api.services import SERVICES, Services
from orchestrator.chain import CHAIN_NAME, chain_definition
from orchestrator.dag.kinds import default_kinds
from orchestrator.dag.runner import BuiltinFallback, DagRunner
from orchestrator.dag.validate import CompiledWorkflow, compile_workflow
from orchestrator.engine import WorkflowOrchestrator
from orchestrator.keyword_intent import keyword_intent_fallback
from orchestrator.settings import Settings
from state.memory import MemoryStateStore
from state.models import WorkflowState
from state.redis import RedisStateStore
from state.store import StateStore

BUILTIN_FALLBACKS: Mapping[str, BuiltinFallback] = {"keyword_intent": keyword_intent_fallback}


def create_store(settings: Settings) -> StateStore:
    if settings.redis_url:
        return RedisStateStore.from_url(
            settings.redis_url, prefix=settings.key_prefix, ttl_s=settings.state_ttl_s
        )
    return MemoryStateStore(ttl_s=settings.state_ttl_s)


def create_app(
    settings: Settings,
    *,
    store: StateStore | None = None,
    http: AgentTransport | None = None,
    replica_id: str | None = None,
) -> web.Application:
    """Build the API; tests inject `store` and `http` (the agent transport).

    The app closes only what it opened.
    """
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app.add_routes(routes)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        own_store = store is None
        own_http = http is None
        the_store = store if store is not None else create_store(settings)
        the_http = http if http is not None else create_transport(settings.http_transport)
        client = AgentClient(settings.agents, the_http)
        kinds = default_kinds()
        runner = DagRunner(
            agents=client, registry=settings.agents, kinds=kinds, builtins=BUILTIN_FALLBACKS
        )
        chain = compile_workflow(
            chain_definition(
                timeout_s=settings.workflow_timeout_s, max_parallel=settings.max_parallel
            ),
            agents=list(settings.agents),
            kinds=kinds,
            builtins=list(BUILTIN_FALLBACKS),
        )

        def resolve(state: WorkflowState) -> CompiledWorkflow:
            # A resumed workflow: the chain by name, a client's DAG from its stored definition.
            if state.definition is None and state.definition_name == CHAIN_NAME:
                return chain
            return services.compile(state.definition)

        orchestrator = WorkflowOrchestrator(
            store=the_store,
            runner=runner,
            replica_id=replica_id,
            leases=the_store.leases(),
            lease_s=settings.lease_s,
            shutdown_grace_s=settings.shutdown_grace_s,
            resolve=resolve,
            handoff_on_shutdown=the_store.backend != "memory",
        )
        services = Services(
            settings=settings,
            orchestrator=orchestrator,
            client=client,
            kinds=kinds,
            builtins=BUILTIN_FALLBACKS,
            chain=chain,
        )
        await orchestrator.start()
        app[SERVICES] = services
        try:
            yield
        finally:
            await orchestrator.close()
            if own_http:
                await the_http.aclose()
            if own_store:
                await the_store.close()

    app.cleanup_ctx.append(resources)
    return app
