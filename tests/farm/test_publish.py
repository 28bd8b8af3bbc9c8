"""A job reported by notice is written to its Redis queue as Celery's producer writes it."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError

from farm.celery_app import create_app
from farm.publish import _QUEUES, _RedisQueues, close_queues, publish
from farm.settings import ClusterSettings

QUEUE = "transcode.cpu.h264"
#: Differ by nature between two publishes of one task: a fresh delivery tag, and what names
#: the sending process or how the args are shown to monitors.
_PER_SEND = {"delivery_tag", "origin", "argsrepr", "reply_to"}


def _sent(r: redis.Redis, spec: dict[str, Any], *, direct: bool, url: str) -> dict[str, Any]:
    app = create_app(ClusterSettings(broker_url=url))
    if not direct:
        spec = {k: v for k, v in spec.items() if k != "notify"}
    publish(app, queue=QUEUE, job_id="j1", task_id="j1.1", spec=spec)
    raw = r.rpop(QUEUE)
    assert isinstance(raw, bytes) and r.llen(QUEUE) == 0
    app.close()
    return dict(json.loads(raw))


def _flat(message: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in message.items() if k not in ("headers", "properties", "body")}
    for part in ("headers", "properties"):
        out.update({f"{part}.{k}": v for k, v in message[part].items() if k not in _PER_SEND})
    out["body"] = json.loads(base64.b64decode(message["body"]))
    return out


def test_the_message_is_celerys_own(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    spec = {"input_key": "jobs/j1/in", "duration": 2.0, "notify": "farm:notice:x"}
    direct = _sent(r, spec, direct=True, url=redis_url)
    # The same job sent without a notice channel goes through Celery's send_task; with the
    # channel put back into its args, every field but the per-send ones must agree.
    celery = _sent(r, spec, direct=False, url=redis_url)
    celery["body"] = base64.b64encode(
        json.dumps([["j1", spec], *json.loads(base64.b64decode(celery["body"]))[1:]]).encode()
    ).decode()
    celery["headers"]["ignore_result"] = True  # what Celery sends for a job nobody asks about
    assert _flat(direct) == _flat(celery)
    assert set(direct["headers"]) == set(celery["headers"])
    assert set(direct["properties"]) == set(celery["properties"])
    assert direct["headers"]["timelimit"] == [20, 8]  # the segment's (hard, soft) limits
    assert json.loads(direct["headers"]["argsrepr"]) == ["j1", spec]


def test_an_unreachable_broker_is_kombus_operational_error(redis_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ClusterSettings(broker_url=f"redis://127.0.0.1:{port}/0"))
    app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_step": 0.05}
    with pytest.raises(OperationalError):
        publish(app, queue=QUEUE, job_id="j1", task_id="j1.1", spec={"notify": "farm:notice:x"})
    assert _RedisQueues.for_app(create_app(ClusterSettings(broker_url="memory://"))) is None


def test_closing_releases_the_connection_and_a_later_publish_reconnects(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    app = create_app(ClusterSettings(broker_url=redis_url))
    spec = {"notify": "farm:notice:x"}
    publish(app, queue=QUEUE, job_id="j1", task_id="j1.1", spec=spec)
    first = _QUEUES[app]
    assert first is not None
    close_queues(app)
    assert app not in _QUEUES
    publish(app, queue=QUEUE, job_id="j2", task_id="j2.1", spec=spec)
    assert _QUEUES[app] is not first
    assert r.llen(QUEUE) == 2
    close_queues(app)
    app.close()
