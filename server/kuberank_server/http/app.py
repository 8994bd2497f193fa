"""`create_app`: the FastAPI application around one scorer.

The lifespan starts the engine in the background (so `/health` answers at once and `/ready`
says 503 while loading), then runs the golden query; only if it ranks its relevant document
first does the server turn ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse

from kuberank_server import __version__
from kuberank_server.auth import Authenticator, require_principal
from kuberank_server.engine import EngineConfigurationError
from kuberank_server.engine.prompts import TokenLimits
from kuberank_server.engine.scorer import Scorer
from kuberank_server.http.connections import ConnectionRecycler, RecycleConnections
from kuberank_server.http.errors import (
    NotReadyError,
    error_response,
    error_responses,
    install_error_handlers,
)
from kuberank_server.http.middleware import BodyGuard, HeadAsGet, RequestObserver
from kuberank_server.observability.audit import AuditTrail
from kuberank_server.observability.metrics import ServerMetrics
from kuberank_server.observability.startup import StartupPhases
from kuberank_server.rerank.api_router import router as rerank_router
from kuberank_server.rerank.serving import RerankScoring, new_request_id
from kuberank_server.runtime.heap import freeze_startup_heap
from kuberank_server.runtime.lifecycle import ConcurrencyLimiter, Lifecycle
from kuberank_server.runtime.settings import ServerSettings

log = logging.getLogger(__name__)

GOLDEN_QUERY = "What is the capital of France?"
GOLDEN_DOCUMENTS = (
    "Bananas are a good source of potassium.",
    "Paris is the capital and largest city of France.",
    "A basketball team has five players on the court.",
)
GOLDEN_RELEVANT_INDEX = 1


def create_app(
    settings: ServerSettings,
    *,
    scorer: Scorer | None = None,
    metrics: ServerMetrics | None = None,
    on_engine_failure: Callable[[], None] | None = None,
) -> FastAPI:
    """An app serving `scorer` (owned by the caller), or one that starts its own engine
    from `settings` (and calls `on_engine_failure` if that fails)."""
    metrics = metrics or ServerMetrics()
    lifecycle = Lifecycle()
    authenticator = Authenticator.from_settings(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        startup = asyncio.create_task(_start_serving(app, settings, scorer, on_engine_failure))
        try:
            yield
        finally:
            startup.cancel()
            await authenticator.aclose()
            own_scorer = getattr(app.state, "scorer", None)
            if scorer is None and own_scorer is not None:
                own_scorer.shutdown()

    app = FastAPI(
        title="kuberank rerank server",
        version=__version__,
        lifespan=lifespan,
        description="Every rerank dialect (Jina, vLLM, Cohere v2, TEI, NIM) over vLLM.",
        # Starlette's trailing-slash redirect builds its Location from the Host header.
        redirect_slashes=False,
        # Behind the API's auth unless `open_docs` (see `_add_protected_docs`).
        openapi_url="/openapi.json" if settings.open_docs else None,
        docs_url="/docs" if settings.open_docs else None,
        redoc_url="/redoc" if settings.open_docs else None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.lifecycle = lifecycle
    app.state.authenticator = authenticator
    app.state.concurrency_limiter = ConcurrencyLimiter(
        settings.max_concurrent_requests,
        settings.max_queued_requests,
        metrics,
        max_wait_seconds=settings.max_queue_wait_seconds,
        drain_seconds=settings.drain_timeout_seconds,
    )
    # uvicorn must serve with `connection_recycler.protocol()` for recycling to apply.
    app.state.connection_recycler = ConnectionRecycler(
        settings, metrics, draining=lambda: lifecycle.state == "draining"
    )
    install_error_handlers(app)
    app.include_router(rerank_router)
    _add_probes(app, lifecycle)
    if not settings.open_docs:
        _add_protected_docs(app)
    # Outermost last: the observer sees (and counts) the guard's 413/415 answers too, and the
    # audit trail inside it sees the observer's request id.
    app.add_middleware(HeadAsGet)
    app.add_middleware(
        BodyGuard,
        router=app.router,
        lifecycle=lifecycle,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
    )
    app.add_middleware(
        AuditTrail,
        unauthenticated_per_second=settings.audit_unauthenticated_records_per_second,
    )
    app.add_middleware(
        RequestObserver,
        metrics=metrics,
        lifecycle=lifecycle,
        log_probes=settings.log_probes,
        unauthenticated_per_second=settings.audit_unauthenticated_records_per_second,
    )
    app.add_middleware(RecycleConnections, recycler=app.state.connection_recycler)
    return app


def _add_probes(app: FastAPI, lifecycle: Lifecycle) -> None:
    def engine_dead() -> bool:
        scoring: RerankScoring | None = getattr(app.state, "rerank_scoring", None)
        return scoring is not None and scoring.scorer.engine.errored

    @app.get("/health", tags=["probes"], responses=error_responses(503))
    async def health() -> Any:
        """Liveness: the process serves HTTP and its engine, once started, is alive."""
        if engine_dead():
            return error_response(NotReadyError("the vLLM engine has died"))
        return {"status": "ok"}

    @app.get("/ready", tags=["probes"], responses=error_responses(503))
    async def ready() -> Any:
        """Readiness: the engine is loaded, the golden query passed, and no drain began."""
        if lifecycle.state != "ready":
            return error_response(NotReadyError(f"not ready: {lifecycle.reason}"))
        if engine_dead():
            return error_response(NotReadyError("not ready: the vLLM engine has died"))
        return {"status": "ready"}


def _add_protected_docs(app: FastAPI) -> None:
    """/openapi.json and /docs behind the same credential as the API routes."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_principal)])
    async def openapi_document() -> Any:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_principal)])
    async def docs_page() -> Any:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")


async def _start_serving(
    app: FastAPI,
    settings: ServerSettings,
    scorer: Scorer | None,
    on_engine_failure: Callable[[], None] | None,
) -> None:
    lifecycle: Lifecycle = app.state.lifecycle
    phases = StartupPhases(app.state.metrics)
    if scorer is None:
        try:
            scorer = await Scorer.start(settings, phases)
        except Exception as error:
            if isinstance(error, EngineConfigurationError):  # says all there is: no traceback
                log.error("the vLLM engine cannot start: %s", error)
            else:
                log.exception("the vLLM engine failed to start")
            lifecycle.mark_failed(f"the engine failed to start: {error}")
            if on_engine_failure is not None:
                on_engine_failure()
            return
        app.state.scorer = scorer
    app.state.rerank_scoring = RerankScoring(
        scorer, settings, app.state.metrics, app.state.concurrency_limiter
    )
    if not settings.golden_query_check:
        log.warning("golden query check is off: ready as soon as the engine is")
        phases.finish()
        freeze_startup_heap()
        lifecycle.mark_ready()
        return
    try:
        async with phases.phase("golden_query", "checking the golden query"):
            scores = await scorer.score(
                GOLDEN_QUERY,
                GOLDEN_DOCUMENTS,
                instruction=settings.instruction,
                limits=TokenLimits(settings.max_query_tokens, settings.max_document_tokens, True),
                request_id=new_request_id("golden"),
            )
    except Exception as error:
        log.exception("golden query failed with an error; staying not ready")
        lifecycle.mark_failed(f"the golden query failed: {error}")
        return
    best = max(range(len(GOLDEN_DOCUMENTS)), key=lambda i: scores.relevance[i])
    if best != GOLDEN_RELEVANT_INDEX:
        log.error(
            "golden query failed: %r ranked %r first (scores %s); staying not ready",
            GOLDEN_QUERY, GOLDEN_DOCUMENTS[best], scores.relevance,
        )  # fmt: skip
        lifecycle.mark_failed("the golden query did not rank its relevant document first")
        return
    log.info("golden query passed (scores %s)", scores.relevance)
    phases.finish()
    freeze_startup_heap()
    lifecycle.mark_ready()
