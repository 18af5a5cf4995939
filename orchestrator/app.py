"""create_app: the aiohttp application, its resources opened and closed in cleanup_ctx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from agents.client import AgentClient
from agents.transport import AgentTransport, create_transport
from circuit.board import BreakerBoard, MemoryBreakerBoard
from circuit.sharing import BreakerSync
from orchestrator.access.keys import Authenticator, KeyStore, StaticKeyStore
from orchestrator.access.principal import OPEN_TENANT, Principal, Role
from orchestrator.api import events as event_routes
from orchestrator.api import ops as ops_routes
from orchestrator.api.access import ACCESS, Access
from orchestrator.api.admission import ADMISSION, Admission
from orchestrator.api.middleware import edge_middleware
from orchestrator.api.redact import REDACTOR, AddressRedactor
from orchestrator.api.requests import parse_query_request
from orchestrator.api.routes import routes
from orchestrator.api.schedule_routes import routes as schedule_routes
from orchestrator.api.services import SERVICES, Services
from orchestrator.builtins import BUILTIN_FALLBACKS
from orchestrator.chain import CHAIN_NAME, chain_definition
from orchestrator.dag.compiler import CompiledWorkflow, compile_workflow
from orchestrator.dag.engine import BuiltinFallback, DagEngine
from orchestrator.dag.kinds import NodeKind, default_kinds
from orchestrator.lifecycle import WorkflowOrchestrator
from orchestrator.metered_store import MeteredStore
from orchestrator.metrics import AgentCollector, StoreMetrics, WorkflowMetrics
from orchestrator.schedules import Scheduler
from orchestrator.settings import Settings
from orchestrator.tracing import configured_tracer_provider, tracer_of
from state.memory import MemoryStateStore
from state.models import WorkflowState
from state.ratelimit import MemoryQuotas, Quotas
from state.schedules import Schedule
from state.store import StateStore

if TYPE_CHECKING:
    from state.connect import Client



# The Redis parts are imported only when REDIS_URL is set: a service on the memory
# store never loads redis-py (~9 MB; tests/agents/test_lazy_imports.py).


def create_store(settings: Settings) -> StateStore:
    if settings.redis_url:
        from state.redis import RedisStateStore

        return RedisStateStore.from_url(
            settings.redis_url,
            prefix=settings.key_prefix,
            ttl_s=settings.state_ttl_s,
            retention_s=settings.retention_s,
            history_shards=settings.history_shards,
            cluster=settings.redis_cluster,
            connect_timeout_s=settings.redis_connect_timeout_s,
            command_timeout_s=settings.redis_timeout_s,
            max_connections=settings.redis_max_connections,
            pool_timeout_s=settings.redis_pool_timeout_s,
        )
    return MemoryStateStore(
        ttl_s=settings.state_ttl_s,
        retention_s=settings.retention_s,
        max_workflows=settings.memory_max_workflows,
        max_bytes=settings.memory_max_bytes,
    )


def create_redis_client(settings: Settings) -> Client | None:
    """The bounded client that the breaker board and the access layer share (None: no Redis)."""
    if not settings.redis_url:
        return None
    from state.connect import connect

    return connect(
        settings.redis_url,
        cluster=settings.redis_cluster,
        connect_timeout_s=settings.redis_connect_timeout_s,
        command_timeout_s=settings.redis_timeout_s,
        max_connections=settings.redis_max_connections,
        pool_timeout_s=settings.redis_pool_timeout_s,
    )


def create_breaker_board(settings: Settings, client: Client | None) -> BreakerBoard:
    """Where replicas share breakers: Redis when the state is there, else this process."""
    ttl_s = max(2.0, 8 * settings.breaker_sync_s)
    if client is not None:
        from circuit.board_redis import RedisBreakerBoard

        return RedisBreakerBoard(
            client,
            prefix=settings.key_prefix,
            timeout_s=settings.redis_timeout_s,
            report_ttl_s=ttl_s,
        )
    return MemoryBreakerBoard(report_ttl_s=ttl_s)


def create_access(settings: Settings, client: Client | None) -> Access:
    """Key stores and quotas: on Redis when REDIS_URL is set (shared by every replica)."""
    config = settings.access
    stores: list[KeyStore] = [StaticKeyStore(config.keys)]
    if config.redis_keys:
        if client is None:
            raise ValueError("[access] redis_keys = true needs REDIS_URL")
        from orchestrator.access.keys_redis import RedisKeyStore

        stores.append(
            RedisKeyStore(client, prefix=settings.key_prefix, default_limits=config.default_limits)
        )
    quotas: Quotas = MemoryQuotas()
    if client is not None:
        from state.ratelimit_redis import RedisQuotas

        quotas = RedisQuotas(client, prefix=settings.key_prefix)
    return Access(config=config, authenticator=Authenticator(stores), quotas=quotas)


async def start_scheduled_run(
    schedule: Schedule, *, services: Services, access: Access, admission: Admission
) -> str:
    """Start one run of a schedule, as an async query of its tenant would be started."""
    # Run as the tenant that created the schedule, with its agents as of now.
    tenant = schedule.tenant or OPEN_TENANT
    allowed = access.config.tenant(tenant).agents
    req = parse_query_request(schedule.request, max_query_chars=services.settings.max_query_chars)
    workflow, inputs = await services.prepare(req, agents=allowed)
    missing = services.disallowed_agents(workflow, allowed)
    if missing:
        raise PermissionError(f"tenant {tenant!r} may not call {missing}")
    # A run counts against its tenant's cap on async workflows like any other
    # (over it: this tick's run is skipped, logged as schedule_fire_failed).
    who = Principal(
        key_id=f"schedule:{schedule.schedule_id}", tenant=tenant, roles=frozenset({Role.USER})
    )
    orchestrator = services.orchestrator
    ticket = await admission.admit(
        who, is_async=True, timeout_s=workflow.definition.options.timeout_s
    )
    try:
        state = await orchestrator.submit(
            workflow,
            inputs,
            definition=req.workflow,
            tenant=schedule.tenant,
            schedule_id=schedule.schedule_id,
        )
    except BaseException:
        await admission.abandon(ticket)
        raise
    workflow_id = state.workflow_id
    admission.release_when(ticket, lambda: orchestrator.wait(workflow_id))
    return workflow_id


def create_app(
    settings: Settings,
    *,
    store: StateStore | None = None,
    http: AgentTransport | None = None,
    replica_id: str | None = None,
    breaker_board: BreakerBoard | None = None,
    tracer_provider: TracerProvider | None = None,
    clock: Callable[[], float] = time.time,
    kinds: Iterable[NodeKind] = (),
    builtins: Mapping[str, BuiltinFallback] | None = None,
) -> web.Application:
    """Build the API; tests inject `store`, `http` (the agent transport), `breaker_board`,
    `tracer_provider` (e.g. one with an in-memory exporter) and `clock` (epoch seconds)
    for the scheduler.

    Extensions: `kinds` are node kinds beside the built-in ones (a name already taken
    is a ValueError); `builtins` are built-in fallbacks by name, added to the built-in
    ones (a name already there replaces it: `keyword_intent` is the chain's NLP
    fallback). Definitions may use both, and GET /api/workflows/schema lists them.

    The app closes only what it opened.
    """
    kind_registry = default_kinds(kinds)
    builtin_fallbacks: Mapping[str, BuiltinFallback] = {**BUILTIN_FALLBACKS, **(builtins or {})}
    app = web.Application(
        # One middleware (api/middleware.py): outermost first, the request id (every
        # response carries it, every line of the request logs it), browser checks (their
        # headers reach every response), errors to JSON, then who is calling, then the
        # body's media type.
        middlewares=[edge_middleware],
        client_max_size=settings.max_body_bytes,
        # Passed to every connection's handler: idle keep-alive connections are closed,
        # and request lines and header fields stay within aiohttp's defaults.
        handler_args={
            "keepalive_timeout": settings.keepalive_timeout_s,
            "max_line_size": 8190,
            "max_field_size": 8190,
            # Bodies are never decompressed: a Content-Encoding is refused with a 415
            # (read_json_object) instead of inflating a bomb or failing in the parser.
            "auto_decompress": False,
        },
    )
    app.add_routes(routes)
    app.add_routes(event_routes.routes)
    app.add_routes(ops_routes.routes)
    app[event_routes.OPEN_STREAMS] = event_routes.OpenStreams()
    app.on_shutdown.append(event_routes.close_open_streams)
    injected_provider = tracer_provider
    app.add_routes(schedule_routes)
    app.on_response_prepare.append(_plain_server_header)
    # One bounded client for the board and the access layer; the store keeps its own pool
    # (its pub/sub connections must not starve the checks every request makes).
    shared_redis = create_redis_client(settings)
    access = create_access(settings, shared_redis)
    app[ACCESS] = access
    admission = Admission(access.quotas, settings.access, state_ttl_s=settings.state_ttl_s)
    app[ADMISSION] = admission
    app[REDACTOR] = AddressRedactor(settings.agents)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        own_store = store is None
        own_http = http is None
        own_board = breaker_board is None
        board = (
            breaker_board
            if breaker_board is not None
            else create_breaker_board(settings, shared_redis)
        )
        # This app's own registry: never the process-global one.
        registry = CollectorRegistry()
        metrics = WorkflowMetrics(
            registry=registry,
            definitions=settings.metrics_definitions,
            max_node_labels=settings.metrics_max_steps,
            max_series=settings.max_metric_series,
        )
        inner_store = store if store is not None else create_store(settings)
        the_store = MeteredStore(inner_store, StoreMetrics(registry))
        provider = (
            injected_provider
            if injected_provider is not None
            else configured_tracer_provider(settings)
        )
        own_provider = injected_provider is None and provider is not None
        tracer = tracer_of(provider)
        the_http = http if http is not None else create_transport(settings.http_transport)
        client = AgentClient(settings.agents, the_http, tracer=tracer)
        registry.register(AgentCollector(client))
        # A2A agents: read their cards now (reachable? what do they offer?), without
        # holding start-up up; one that is not up yet is read again on its first call.
        discovery = asyncio.create_task(client.discover(), name="a2a-discovery")
        dag_engine = DagEngine(
            agents=client,
            registry=settings.agents,
            kinds=kind_registry,
            builtins=builtin_fallbacks,
            node_timeout_s=settings.step_timeout_s,
            limits=settings.limits,
            tracer=tracer,
        )
        chain = compile_workflow(
            chain_definition(
                timeout_s=settings.workflow_timeout_s, max_parallel=settings.max_parallel
            ),
            agents=list(settings.agents),
            kinds=kind_registry,
            builtins=list(builtin_fallbacks),
        )

        def resolve(state: WorkflowState) -> CompiledWorkflow:
            # A resumed workflow: the chain by name, a client's DAG from its stored definition.
            if state.definition is None and state.definition_name == CHAIN_NAME:
                return chain
            return services.compile(state.definition)

        orchestrator = WorkflowOrchestrator(
            store=the_store,
            dag_engine=dag_engine,
            replica_id=replica_id,
            leases=the_store.leases(),
            lease_s=settings.lease_s,
            shutdown_grace_s=settings.shutdown_grace_s,
            resolve=resolve,
            handoff_on_shutdown=the_store.backend != "memory",
            write_delay_s=settings.state_write_delay_s,
            metrics=metrics,
            tracer=tracer,
        )
        breakers = BreakerSync(
            client.breakers(),
            board,
            replica=orchestrator.replica_id,
            interval_s=settings.breaker_sync_s,
        )

        def start_scheduled(schedule: Schedule, tick: float) -> Awaitable[str]:
            return start_scheduled_run(
                schedule, services=services, access=access, admission=admission
            )

        scheduler = Scheduler(
            store=the_store.schedules(),
            start=start_scheduled,
            clock=clock,
            poll_s=settings.schedule_poll_s,
            grace_s=settings.schedule_grace_s,
        )
        services = Services(
            settings=settings,
            orchestrator=orchestrator,
            client=client,
            kinds=kind_registry,
            builtins=builtin_fallbacks,
            chain=chain,
            breakers=breakers,
            metrics=metrics,
            resolve=resolve,
            tracing=tracer is not None,
            scheduler=scheduler,
        )
        # Ops modes in force (open / disabled) apply before the first request is served.
        await breakers.start()
        await orchestrator.start()
        scheduler.start()
        app[SERVICES] = services
        try:
            yield
        finally:
            discovery.cancel()
            await asyncio.gather(discovery, return_exceptions=True)
            await scheduler.close()
            await orchestrator.close()
            await client.aclose()
            await breakers.close()
            if own_board:
                await board.close()
            await admission.close()
            if shared_redis is not None:
                await shared_redis.aclose()
            if own_http:
                await the_http.aclose()
            if own_store:
                await the_store.close()
            if own_provider and provider is not None:
                provider.shutdown()

    async def stop_workflows(app: web.Application) -> None:
        # on_shutdown runs after the listening sockets closed and before aiohttp waits
        # for in-flight requests: running workflows get their grace period here, then
        # end (memory store) or are handed off (Redis), so the sync requests waiting
        # on them are answered with the workflow document before connections close.
        if SERVICES in app:
            await app[SERVICES].orchestrator.close()

    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(stop_workflows)
    return app


async def _plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp would announce "Python/3.x aiohttp/3.x": versions help nobody but attackers.
    response.headers["Server"] = "orchestrator"
