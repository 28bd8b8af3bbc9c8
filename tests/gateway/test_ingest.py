"""Segment ingest through a gateway in front of two orchestrators (real Redis, PostgreSQL)."""

from __future__ import annotations

import io
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesParser
from email.policy import HTTP
from typing import cast

import av
import httpx
import pytest

from farm.media.synth import make_segment
from gateway.dispatch import Dispatcher
from gateway.pool import Pool
from gateway.sessions import SessionLog
from tests.factories import coded_clip
from tests.farm.harness import wait_for
from tests.gateway.conftest import Env, Gateway

PROFILES = [
    {"name": "low", "width": 256, "height": 144, "bitrate": 300000, "fps": 30},
    {"name": "mid", "width": 320, "height": 180, "bitrate": 500000, "fps": 30},
]
CONFIG = json.dumps({"profiles": PROFILES})
#: Encoded pixels of a 1 s 30 fps segment in PROFILES: what a job costs at 1 credit/pixel.
COST = 30 * (256 * 144 + 320 * 180)


@pytest.fixture(scope="module")
def segment() -> bytes:
    return make_segment(320, 240, 30, 1.0)


def post(gw: Gateway, path: str, data: bytes, key: str | None, **headers: str) -> httpx.Response:
    h = {"Content-Duration": "1000", "Livepeer-Transcode-Configuration": CONFIG, **headers}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{gw.url}{path}", content=data, headers=h, timeout=120)


def _workers(node_url: str) -> list[str]:
    """The live workers a node's registry lists."""
    status = httpx.get(f"{node_url}/status", timeout=10).json()
    return [w["name"] for w in status["workers"]]


def parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    raw = b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(raw + response.content)
    return [(dict(p.items()), p.get_payload(decode=True)) for p in message.iter_parts()]


def test_ingest_returns_playable_renditions_as_multipart(gateway: Gateway, segment: bytes) -> None:
    key_id, key = gateway.key(credits=10 * COST)
    r = post(gateway, "/live/stream-1/7.ts", segment, key, Accept="multipart/mixed")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("multipart/mixed; boundary=")
    got = parts(r)
    assert [h["Rendition-Name"] for h, _ in got] == ["low", "mid"]
    for (headers, body), profile in zip(got, PROFILES, strict=True):
        assert headers["Content-Type"] == "video/MP2T"
        assert int(headers["Content-Length"]) == len(body)
        assert headers["Content-Disposition"] == f'attachment; filename="{profile["name"]}_7.ts"'
        with av.open(io.BytesIO(body)) as c:
            frames = list(c.decode(video=0))
            assert (frames[0].width, frames[0].height) == (profile["width"], profile["height"])
            assert len(frames) == 30 and frames[0].key_frame and c.streams.audio
    assert gateway.balance(key_id) == 9 * COST  # charged the encoded pixels, exactly
    session = httpx.get(
        f"{gateway.url}/api/sessions/{key_id}:stream-1",
        timeout=10,
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    assert session["attempts"][-1]["outcome"] == "done"
    assert session["attempts"][-1]["cost"] == COST


def test_json_answer_without_multipart(gateway: Gateway, segment: bytes) -> None:
    _, key = gateway.key(credits=COST)
    r = post(gateway, "/live/stream-2/0.ts", segment, key)
    assert r.status_code == 200
    body = r.json()
    assert body["charged"] == COST and body["orchestrator"] in ("orch-a", "orch-b")
    assert [x["frames"] for x in body["renditions"]] == [30, 30]


@pytest.mark.parametrize(
    ("config", "names"),
    [
        # The header takes the auth webhook's shape: built-in presets, then custom profiles.
        ({"presets": ["P144p30fps16x9"], "profiles": PROFILES[:1]}, ["P144p30fps16x9", "low"]),
        # Neither is required: a configuration that only tunes the session keeps the defaults.
        ({"timeoutMultiplier": 2}, ["P240p30fps16x9", "P360p30fps16x9"]),
    ],
)
def test_transcode_configuration_in_the_auth_response_shape(
    gateway: Gateway, segment: bytes, config: dict[str, object], names: list[str]
) -> None:
    _, key = gateway.key(credits=100 * COST)
    r = post(
        gateway,
        "/live/stream-config/0.ts",
        segment,
        key,
        **{"Livepeer-Transcode-Configuration": json.dumps(config)},
    )
    assert r.status_code == 200, r.text
    assert [x["name"] for x in r.json()["renditions"]] == names


@pytest.mark.parametrize(
    ("path", "key", "body", "headers", "status"),
    [
        ("/live/s/0.ts", None, "seg", {}, 401),
        ("/live/s/0.ts", "lpf_wrong", "seg", {}, 401),
        ("/live/s/0.ts", "revoked", "seg", {}, 401),
        ("/live/s/0.ts", "empty", "seg", {}, 402),
        ("/live/s/0.ts", "ok", "big", {}, 413),
        ("/live/s/0.ts", "ok", "text", {}, 422),
        ("/live/s/0.ts", "ok", "seg", {"Livepeer-Transcode-Configuration": "{not json"}, 400),
        (
            "/live/s/0.ts",
            "ok",
            "seg",
            {"Livepeer-Transcode-Configuration": '{"presets":["P9000p"]}'},
            400,
        ),
        (
            "/live/s/0.ts",
            "ok",
            "seg",
            {
                "Livepeer-Transcode-Configuration": '{"profiles":[{"name":"x","width":0,'
                '"height":2,"bitrate":1}]}'
            },
            400,
        ),
        ("/live/..%2F..%2Fetc/0.ts", "ok", "seg", {}, 400),
        ("/live/bad$name/0.ts", "ok", "seg", {}, 400),
        ("/live/s/abc.ts", "ok", "seg", {}, 400),
        ("/live/s/0.m3u8", "ok", "seg", {}, 400),
        ("/live/s/0.ts", "ok", "seg", {"Content-Duration": "soon"}, 400),
        ("/live/s/0.ts", "ok", "seg", {"Content-Duration": "900000"}, 400),
        ("/live/s/0.ts", "ok", "seg", {"Content-Duration": "1_000"}, 400),
        (
            "/live/s/0.ts",
            "ok",
            "seg",
            {"Livepeer-Transcode-Configuration": "[" * 2000 + "]" * 2000},
            400,
        ),
        # The session log's seqNo is 32-bit: refused up front, not after transcoding.
        ("/live/s/2147483648.ts", "ok", "seg", {}, 400),
        # A trailing newline is not part of a valid manifestID, nor a non-ASCII digit of a seqNo.
        ("/live/s%0A/0.ts", "ok", "seg", {}, 400),
        ("/live/s/%D9%A1.ts", "ok", "seg", {}, 400),
        ("/live/s/%EF%BC%91.ts", "ok", "seg", {}, 400),
    ],
)
def test_bad_requests_get_their_status_and_charge_nothing(
    gateway: Gateway,
    segment: bytes,
    path: str,
    key: str | None,
    body: str,
    headers: dict[str, str],
    status: int,
) -> None:
    key_id, raw = gateway.key(credits=0 if key == "empty" else 10 * COST)
    if key == "revoked":
        assert gateway.admin("POST", f"/admin/keys/{key_id}/revoke").status_code == 200
    token = raw if key in ("ok", "revoked", "empty") else key
    data = {"seg": segment, "big": b"\x47" * 2_100_000, "text": b"hello, not video" * 100}[body]
    before = gateway.balance(key_id)
    r = post(gateway, path, data, token, **headers)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"errors", "code"} and r.json()["errors"][0]
    assert gateway.balance(key_id) == before


@pytest.mark.parametrize("name", ["a b", "a'b", 'a"b', "caf\u00e9", "low\n", "..", "-x"])
def test_profile_names_storage_cannot_hold_are_400_and_suspend_nothing(
    gateway: Gateway, segment: bytes, name: str
) -> None:
    # Such a name once passed the gateway and failed on the worker, as a failure of the
    # orchestrator: it was suspended, and every caller got 503 for its time out.
    key_id, key = gateway.key(credits=10 * COST)
    config = json.dumps({"profiles": [{**PROFILES[0], "name": name}]})
    r = post(
        gateway, "/live/names/0.ts", segment, key, **{"Livepeer-Transcode-Configuration": config}
    )
    assert r.status_code == 400 and "name must be 1-64 ASCII letters" in r.json()["errors"][0]
    task = httpx.post(
        f"{gateway.url}/api/transcode",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        json={
            "input": {"url": "https://example.com/x.mp4"},
            "profiles": [{**PROFILES[0], "name": name}],
        },
    )
    assert task.status_code == 400 and "name must be 1-64 ASCII letters" in task.text
    assert gateway.balance(key_id) == 10 * COST
    orchestrators = gateway.admin("GET", "/admin/orchestrators").json()
    assert not any(o["suspended"] for o in orchestrators), orchestrators


def test_a_segment_is_priced_by_what_it_holds_not_by_what_is_declared(gateway: Gateway) -> None:
    # A 2 s segment declared as 1 ms, then as 1 s: reserved by its measured length, and
    # charged its encoded pixels in full either way.
    key_id, key = gateway.key(credits=10 * COST)
    two_seconds = make_segment(320, 240, 30, 2.0)
    for seq, declared in enumerate(("1", "1000")):
        r = post(
            gateway, f"/live/declared/{seq}.ts", two_seconds, key, **{"Content-Duration": declared}
        )
        assert r.status_code == 200, r.text
        assert r.json()["encoded_pixels"] == 2 * COST
        assert r.json()["charged"] == 2 * COST
    assert gateway.balance(key_id) == 6 * COST


def test_a_broadcast_mpeg2_segment_is_transcoded_by_the_farm(gateway: Gateway) -> None:
    # MPEG-2, which no Livepeer orchestrator decodes: this gateway's clusters take it.
    key_id, key = gateway.key(credits=10 * COST)
    mpeg2 = coded_clip("mpeg2video", "mpegts", seconds=1.0, fps=30, audio="mp2")
    r = post(gateway, "/live/broadcast/0.ts", mpeg2, key)
    assert r.status_code == 200, r.text
    assert [x["frames"] for x in r.json()["renditions"]] == [30, 30]
    assert gateway.balance(key_id) == 9 * COST


def test_wrong_method(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.url}/live/s/0.ts", timeout=10)
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def test_fifty_parallel_jobs_on_credit_for_ten(gateway: Gateway, segment: bytes) -> None:
    key_id, key = gateway.key(credits=10 * COST)
    with ThreadPoolExecutor(50) as pool:
        statuses = list(
            pool.map(
                lambda i: post(gateway, f"/live/par/{i}.ts", segment, key).status_code, range(50)
            )
        )
    assert statuses.count(200) == 10, statuses
    assert statuses.count(402) == 40, statuses
    assert gateway.balance(key_id) == 0


def test_rate_limit_trips(env: Env, segment: bytes) -> None:
    gw = env.gateway(FARM_RATE_LIMIT_PER_MINUTE="60", FARM_RATE_BURST="3")
    _, key = gw.key(credits=100 * COST)
    codes = [
        httpx.get(f"{gw.url}/api/me", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        for _ in range(5)
    ]
    assert [c.status_code for c in codes[:3]] == [200, 200, 200]
    limited = codes[3]
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["code"] == "rate_limited"


def test_timeout_multiplier_stretches_the_attempt_timeouts(
    gateway: Gateway, segment: bytes
) -> None:
    # go-livepeer multiplies a segment's timeouts by the configuration's timeoutMultiplier
    # when it is over 1 (capped here, so that a caller is never kept waiting without bound).
    dispatcher = Dispatcher(cast(Pool, None), cast(SessionLog, None), 3, 8.0)
    assert dispatcher.attempt_timeout(1.0) == 8.0
    assert dispatcher.attempt_timeout(3.0, 0.5) == 12.0
    assert dispatcher.attempt_timeout(3.0, 3) == 36.0
    _, key = gateway.key(credits=10 * COST)
    tuned = json.dumps({"profiles": PROFILES, "timeoutMultiplier": 3})
    r = post(gateway, "/live/tm/0.ts", segment, key, **{"Livepeer-Transcode-Configuration": tuned})
    assert r.status_code == 200, r.text
    for bad in ("long", -1, True):
        config = json.dumps({"profiles": PROFILES, "timeoutMultiplier": bad})
        r = post(
            gateway, "/live/tm/1.ts", segment, key, **{"Livepeer-Transcode-Configuration": config}
        )
        assert r.status_code == 400 and "timeoutMultiplier" in r.json()["errors"][0], r.text


def test_no_healthy_orchestrator_is_503_with_retry_after(env: Env, segment: bytes) -> None:
    ghost = {**env.orchs[1].config(), "name": "ghost", "node_url": "http://127.0.0.1:9"}
    gw = env.gateway(expect_unhealthy=True, FARM_ORCHESTRATORS=json.dumps([ghost]))
    key_id, key = gw.key(credits=10 * COST)
    r = post(gw, "/live/nobody/0.ts", segment, key)
    assert r.status_code == 503 and r.json()["code"] == "no_orchestrators"
    assert int(r.headers["Retry-After"]) >= 1
    assert gw.balance(key_id) == 10 * COST


def test_falls_back_when_an_orchestrator_stops(env: Env, segment: bytes) -> None:
    # orch-a is in the gateway's region, so it is preferred; probes never run during the
    # test, so the gateway learns of the failure from the attempt itself. The attempt budget
    # is far above any transcode's time: the test waits on state (orch-a's worker gone from
    # its registry), never on one machine's speed.
    gw = env.gateway(
        FARM_PROBE_INTERVAL_S="3600", FARM_ESTIMATE_MARGIN="0", FARM_ATTEMPT_TIMEOUT_FLOOR_S="120"
    )
    key_id, key = gw.key(credits=10 * COST)
    first = post(gw, "/live/fb/0.ts", segment, key).json()
    assert first["orchestrator"] == "orch-a"
    a = env.orchs[0]
    os.killpg(a.worker.pid, signal.SIGKILL)
    a.worker.wait()
    # Once its heartbeat expires orch-a has no live worker: its node refuses the job at once.
    wait_for(lambda: _workers(a.node_url) == [], timeout=60, what="orch-a's worker to expire")
    results = [post(gw, f"/live/fb/{i}.ts", segment, key) for i in range(1, 4)]
    assert [r.status_code for r in results] == [200, 200, 200], [r.text for r in results]
    assert {r.json()["orchestrator"] for r in results} == {"orch-b"}
    log = httpx.get(
        f"{gw.url}/api/sessions/{key_id}:fb", timeout=10, headers={"Authorization": f"Bearer {key}"}
    ).json()["attempts"]
    seg1 = [(x["orchestrator"], x["outcome"]) for x in log if x["seq"] == 1]
    assert seg1 == [("orch-a", "failed"), ("orch-b", "done")]
    metrics = httpx.get(f"{gw.url}/metrics", timeout=10).text
    assert "livepeer_orchestrator_swaps{" in metrics
    assert gw.balance(key_id) == 10 * COST - 4 * COST
