"""The gateway's OpenAPI schema against its behaviour: a property-based run (schemathesis).

Requests generated from the schema, valid and invalid, go to the gateway app in process, on
real PostgreSQL and Redis, with a funded API key (the admin token on /admin). Every answer
must be documented (status, content type, headers, body schema) and none may be a server
error. The pool is empty, so a job that passes every check up to dispatch is refused with
the documented 503 "no orchestrators", and only that 503 is allowed.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import schemathesis
import sqlalchemy as sa
from hypothesis import given
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CheckContext
from schemathesis.core.failures import ServerError
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import PG_URL, REDIS_HOST, REDIS_PORT, need_service
from tests.fuzz import fuzz_settings

ADMIN = "openapi-admin-token"
#: Examples per operation: about 30 operations in well under two minutes.
EXAMPLES = int(os.environ.get("FARM_OPENAPI_EXAMPLES", "30"))
#: Operations that end in dispatch when every check passes, and their 503 without a pool.
#: Operations whose schema says everything their validation does: any request the schema
#: allows must be taken. (Elsewhere a 400 may come from what a schema cannot say: a file
#: that does not decode, a feature not configured.)
_TAKES_ALL = {"POST /llm", "POST /text-to-image", "POST /text-to-speech", "POST /admin/keys"}
_NEEDS_POOL = (
    "/live/",
    "/text-to-",
    "/image-to-",
    "/upscale",
    "/audio-to-",
    "/segment-",
    "/llm",
    "/api/transcode",
)


@pytest.fixture(scope="module")
def gateway_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """The app on a fresh PostgreSQL schema and Redis database, and a funded key."""
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    need_service("PostgreSQL", "127.0.0.1", 5432)
    schema = f"t_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    db = int(os.environ.get("FARM_TEST_REDIS_DB") or 8 + (os.getpid() % 8))
    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).flushdb()
    home: Path = tmp_path_factory.mktemp("openapi")
    app = create_app(
        GatewaySettings(
            gateway_database_url=f"{PG_URL}?options=-csearch_path%3D{schema}",
            gateway_redis_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}",
            gateway_blob_url=f"file://{home / 'blobs'}",
            admin_token=ADMIN,
            rate_limit_per_minute=10**6,
            rate_burst=10**6,
            task_workers=1,
        )
    )
    state = app.state.gateway
    key, _ = state.ledger.create_key("openapi", 10**12)
    try:
        yield app, key
    finally:
        app.state.studio_jobs.close()
        app.state.ai.close()
        state.close()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).flushdb()


@pytest.fixture(scope="module")
def gateway_schema(gateway_app: tuple[Any, str]) -> Any:
    app = gateway_app[0]

    async def without_lifespan(scope: Any, receive: Any, send: Any) -> None:
        # schemathesis would run the app's lifespan until the process exits, closing the
        # gateway's services after this module's fixture did; the fixture owns them.
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    loaded = schemathesis.openapi.from_dict(app.openapi())
    loaded.app = without_lifespan
    return loaded


def no_server_error(ctx: CheckContext, response: schemathesis.Response, case: Any) -> None:
    """No 5xx, except the 503 of a job that reached dispatch with no orchestrator."""
    status = response.status_code
    if status < 500:
        return
    path = case.operation.path
    if status == 503 and path.startswith(_NEEDS_POOL):
        body = response.json()
        ai = "error" in body and body["error"]["message"] == "Service Unavailable Error"
        if ai or body.get("code") == "no_orchestrators":
            return
    if status == 503 and path == "/healthz" and not response.json()["checks"]["orchestrators"]:
        return
    raise ServerError(operation=case.operation.label, status_code=status)


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_key(gateway_app: tuple[Any, str]) -> str:
    return gateway_app[1]


def exercise(operation: Any, mode: GenerationMode, token: str) -> None:
    """Send ``EXAMPLES`` generated requests to ``operation``; raise on the first failure."""
    checks = [*CHECKS, positive_data_acceptance] if operation.label in _TAKES_ALL else CHECKS

    @given(case=operation.as_strategy(mode))
    @fuzz_settings(EXAMPLES)
    def answers_as_documented(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        case.validate_response(response, checks=checks)

    answers_as_documented()


def test_the_gateway_answers_as_its_schema_says(gateway_schema: Any, api_key: str) -> None:
    failures: list[str] = []
    operations = [result.ok() for result in gateway_schema.get_all_operations()]
    assert len(operations) > 25
    for operation in operations:
        token = ADMIN if operation.path.startswith("/admin") else api_key
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                exercise(operation, mode, token)
            except Unsatisfiable:
                pass  # nothing in this operation can be made invalid
            except (Exception, BaseExceptionGroup) as e:
                failures.append(f"{operation.label} ({mode.value}): {e}")
    assert not failures, "\n\n".join(failures)


def test_the_schema_documents_the_error_body_and_bearer_auth(
    gateway_app: tuple[Any, str],
) -> None:
    spec = gateway_app[0].openapi()
    assert "HTTPValidationError" not in str(spec)
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (farm keys create)",
    }
    create = spec["paths"]["/api/transcode"]["post"]
    assert create["security"] == [{"apiKey": []}]
    assert set(create["responses"]) == {"200", "400", "401", "402", "413", "429", "503"}
    assert create["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert spec["paths"]["/llm"]["post"]["security"] == [{"apiKey": []}, {}]
    assert "Retry-After" in create["responses"]["429"]["headers"]


def request(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to ``app`` in process."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(send())


def test_schema_valid_requests_are_taken(gateway_app: tuple[Any, str]) -> None:
    app, key = gateway_app
    auth = {"Authorization": f"Bearer {key}"}
    # No profiles, as in Studio: the default ladder. It passes validation and reaches the
    # price check, which no orchestrator here can answer: 503, not 400.
    r = request(
        app,
        "POST",
        "/api/transcode",
        headers=auth,
        json={"input": {"url": "https://example.com/clip.mp4"}, "profiles": []},
    )
    assert r.status_code == 503 and r.json()["code"] == "no_orchestrators", r.text
    # JSON has one number type: 100.0 is an integer; null is what "nullable" means. Both pass
    # validation, so these reach dispatch (no orchestrator here: 503, not 400).
    chat = [{"role": "user", "content": "hi"}]
    for path, body in (
        ("/llm", {"model": "", "messages": chat, "stream": False, "max_tokens": 100.0}),
        ("/text-to-image", {"prompt": "a cat", "seed": None, "num_images_per_prompt": 2.0}),
        ("/text-to-image", {"prompt": "a cat", "height": None, "width": 256.0}),
    ):
        r = request(app, "POST", path, headers=auth, json=body)
        assert r.status_code == 503, (path, body, r.text)
    r = request(app, "POST", "/llm", headers=auth, json={**body, "max_tokens": 100.5})
    assert r.status_code == 400
    # A form field cannot be null: the multipart schemas do not say it may be.
    form = app.openapi()["paths"]["/image-to-image"]["post"]["requestBody"]["content"]
    seed = form["multipart/form-data"]["schema"]["properties"]["seed"]
    assert seed["type"] == "integer" and "anyOf" not in seed


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/admin/price", "GET, PUT"),
        ("POST", "/healthz", "GET"),
        ("GET", "/live/stream/1.ts", "POST, PUT"),
        ("PATCH", "/api/transcode", "POST"),
    ],
)
def test_405_names_every_method_the_path_takes(
    gateway_app: tuple[Any, str], method: str, path: str, allow: str
) -> None:
    r = request(gateway_app[0], method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    assert r.json() == {"errors": ["Method Not Allowed"], "code": "method_not_allowed"}
