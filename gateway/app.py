"""The gateway's FastAPI app: routes, and the one place errors become HTTP responses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import Scope

from farm import __version__
from farm.errors import FarmError
from farm.runtime import is_unreachable
from gateway import metrics as gateway_metrics
from gateway.ai.errors import livepeer_error_body
from gateway.ai.service import AIService
from gateway.api import admin, ai, ingest, studio
from gateway.api.body import BodyTimeout
from gateway.errors import GatewayError, Unavailable, http_status
from gateway.settings import GatewaySettings
from gateway.state import GatewayState
from gateway.studio_jobs import StudioJobRunner

__all__ = ["create_app", "error_response"]

log = logging.getLogger(__name__)


def error_response(
    status: int,
    code: str,
    message: str,
    retry_after: float | None = None,
    *,
    livepeer_ai: bool = False,
) -> JSONResponse:
    """The one error shape: ``{"errors": [message], "code": code}`` (Studio's, plus a code);
    on the AI routes go-livepeer's ``{"error": {"message": message}}``."""
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    body = (
        livepeer_error_body(status, message) if livepeer_ai else {"errors": [message], "code": code}
    )
    return JSONResponse(body, status_code=status, headers=headers)


class _GatewayApp(FastAPI):
    """FastAPI, documenting what the gateway answers: a refused request is 400 with the
    gateway's error body (each route declares it), never FastAPI's 422 validation error."""

    def openapi(self) -> dict[str, Any]:
        schema = super().openapi()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if "HTTPValidationError" in str(responses.get("422", "")):
                    del responses["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(app: FastAPI, scope: Scope) -> str:
    """The methods some route of ``app`` takes at the request's path (a 405's Allow)."""
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**scope, "method": method})[0] is Match.FULL
            for route in app.router.routes
        )
    )


def create_app(
    settings: GatewaySettings | None = None, state: GatewayState | None = None
) -> FastAPI:
    """The gateway app for ``settings`` (probes start with the app's lifespan)."""
    settings = settings or GatewaySettings()
    state = state or GatewayState.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Segment requests block a thread each while the cluster transcodes.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 256
        state.pool.start()
        try:
            yield
        finally:
            app.state.studio_jobs.close()
            app.state.ai.close()
            state.close()

    app = _GatewayApp(
        title="farm gateway",
        version=__version__,
        lifespan=lifespan,
        description="Livepeer-compatible segment ingest, file transcoding, AI, credit.",
    )
    app.state.gateway = state
    app.state.studio_jobs = StudioJobRunner(state)
    app.state.ai = AIService(state)

    @app.exception_handler(FarmError)
    async def farm_error(request: Request, e: FarmError) -> JSONResponse:
        status = http_status(e)
        if status >= 500:
            log.warning("%s: %s", e.code, e)
        response = error_response(
            status,
            e.code,
            str(e),
            getattr(e, "retry_after", None) or (5.0 if status == 503 else None),
            livepeer_ai=ai.is_ai_route(request),
        )
        if isinstance(e, GatewayError):
            response.headers.update(e.headers())
        return response

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, e: ClientDisconnect) -> JSONResponse:
        # The client left before its body was in: nobody to answer, and nothing to trace.
        log.info("%s %s: the client left before sending its body", request.method, request.url.path)
        return error_response(400, "client_disconnected", "the client disconnected")

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, e: DBAPIError) -> JSONResponse:
        # The ledger, session log or task store cannot be reached: the caller may retry. Any
        # other database error is a bug, answered as one.
        if not is_unreachable(e):
            raise e
        log.warning("database unreachable: %s", e.orig)  # addresses stay in the log
        return await farm_error(request, Unavailable("database unreachable"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        # Starlette's own refusals: a body it cannot parse, over a router's max_body_size.
        codes = {
            400: "bad_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }
        response = error_response(
            e.status_code,
            codes.get(e.status_code, "http_error"),
            str(e.detail),
            livepeer_ai=ai.is_ai_route(request),
        )
        response.headers.update(e.headers or {})
        if e.status_code == 405:
            # Starlette names only the first route at the path; others may take more methods.
            response.headers["Allow"] = _allowed_methods(app, request.scope)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'body'}: {err['msg']}"
            for err in e.errors()
        )
        return error_response(
            400,
            "bad_request",
            problems or "invalid request",
            livepeer_ai=ai.is_ai_route(request),
        )

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception) -> JSONResponse:
        # Logged by Starlette's error middleware, which re-raises after this answer.
        return error_response(
            500, "internal_error", "internal error", livepeer_ai=ai.is_ai_route(request)
        )

    @app.get(
        "/healthz",
        responses={503: {"description": "Something the gateway needs is down: see checks"}},
    )
    def healthz() -> JSONResponse:
        """Liveness: the ledger, the limiter, and at least one healthy orchestrator."""
        checks = {
            "database": _db_ok(state),
            "redis": state.limiter.ping(),
            "orchestrators": bool(state.pool.candidates()),
        }
        ok = all(checks.values())
        return JSONResponse({"ok": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def metrics() -> Response:
        """Prometheus metrics."""
        try:
            gateway_metrics.set_current_sessions(state.sessions.active_streams())
        except DBAPIError as e:
            log.warning("current sessions unavailable: %s", e)
        return Response(gateway_metrics.render(), media_type=gateway_metrics.CONTENT_TYPE_LATEST)

    app.add_middleware(
        BodyTimeout,
        seconds=settings.body_timeout_s,
        answer=lambda scope, message: error_response(
            408,
            "request_timeout",
            message,
            livepeer_ai=isinstance(scope.get("route"), ai.LivepeerAIRoute),
        ),
    )
    app.include_router(ingest.router)
    app.include_router(studio.router)
    app.include_router(admin.router)
    app.include_router(ai.router)
    return app


def _db_ok(state: GatewayState) -> bool:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with state.ledger.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except SQLAlchemyError:
        return False
