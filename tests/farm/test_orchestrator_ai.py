"""AI jobs on the orchestrator, tried by a gateway that speaks only go-livepeer's wire format.

``farm node`` over TLS in front of a real cluster with an AI worker: the built-in ``upscale``
runner, the built-in development LLM, and a scripted ai-runner for image-to-video (a GPU
cannot run here). tests.farm.livepeer_gateway asks GetOrchestrator for the model, then POSTs
the pipeline's body with a signed SegData and a ``net.Payment``, off chain and on anvil.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from chain.devchain import DevChain
from chain.payment import params_from_net, price_from_net
from farm.golivepeer import net_pb2
from farm.orchestrator.balances import Balances
from farm.registry import redis_py_url
from tests.factories import wav_audio
from tests.farm.ai.helpers import ScriptedRunner, decode, picture, png
from tests.farm.harness import Cluster, cluster_env
from tests.farm.livepeer_gateway import LivepeerGateway
from tests.farm.test_orchestrator import OrchestratorNode
from tests.farm.test_orchestrator_chain import chain_env, devchain  # noqa: F401
from tests.fuzz import fuzz_settings

UPSCALER = "stabilityai/stable-diffusion-x4-upscaler"
VIDEO_MODEL = "stabilityai/stable-video-diffusion-img2vid-xt"
ECHO = "farm/echo"
DOLLAR_MODEL = "priced/in-dollars"
SPEECH_MODEL = "parler-tts/parler-tts-large-v1"
SPEECH = wav_audio(0.25)
UPSCALE, VIDEO, LLM = 30, 29, 33
#: Wei per pixel of the upscaler, above the transcoding price of the chain tests (10**7).
UPSCALE_PRICE = 3 * 10**7
FRAMES = 14


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, postgres_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, cluster_env(tmp_path, redis_url, postgres_url))
    c.env["FARM_AI_PROBE_S"] = "0.3"
    yield c
    c.stop()


@pytest.fixture
def frames_runner() -> Iterator[ScriptedRunner]:
    """An ai-runner for image-to-video answering FRAMES pictures, as ai-runner's
    VideoResponse carries them."""
    pictures = [
        {
            "url": "data:image/png;base64," + base64.b64encode(png(picture(66, 50, i))).decode(),
            "seed": 5,
            "nsfw": False,
        }
        for i in range(FRAMES)
    ]
    runner = ScriptedRunner(status=200, body={"frames": [pictures]}).start()
    yield runner
    runner.stop()


@pytest.fixture
def speech_runner() -> Iterator[ScriptedRunner]:
    """An ai-runner for text-to-speech answering SPEECH as ai-runner's AudioResponse."""
    url = "data:audio/wav;base64," + base64.b64encode(SPEECH).decode()
    runner = ScriptedRunner(status=200, body={"audio": {"url": url}}).start()
    yield runner
    runner.stop()


def _models(frames_runner: ScriptedRunner, speech_runner: ScriptedRunner) -> str:
    return json.dumps(
        [
            {"pipeline": "text-to-speech", "model_id": SPEECH_MODEL, "url": speech_runner.url},
            {
                "pipeline": "upscale",
                "model_id": UPSCALER,
                "warm": True,
                "price_per_unit": UPSCALE_PRICE,
                "pixels_per_unit": 1,
            },
            {"pipeline": "llm", "model_id": ECHO, "price_per_unit": 3, "pixels_per_unit": 2},
            {"pipeline": "image-to-video", "model_id": VIDEO_MODEL, "url": frames_runner.url},
            # No price feed for dollars here: served, but not for tickets.
            {
                "pipeline": "text-to-image",
                "model_id": DOLLAR_MODEL,
                "url": frames_runner.url,
                "price_per_unit": 1,
                "currency": "USD",
            },
        ]
    )


@pytest.fixture
def offchain(
    cluster: Cluster, frames_runner: ScriptedRunner, speech_runner: ScriptedRunner
) -> Iterator[tuple[OrchestratorNode, LivepeerGateway]]:
    cluster.start_worker("--ai-models", _models(frames_runner, speech_runner))
    node = OrchestratorNode(cluster)
    gw = node.gateway()
    yield node, gw
    gw.close()
    node.close()


def _image(width: int = 48, height: int = 36) -> dict[str, tuple[str, bytes, str]]:
    return {"image": ("image.png", png(picture(width, height)), "image/png")}


def _prices(info: net_pb2.OrchestratorInfo) -> dict[tuple[int, str], Fraction]:
    return {(p.capability, p.constraint): price_from_net(p) for p in info.capabilities_prices}


def test_upscale_offchain_result_served_by_the_node(
    offchain: tuple[OrchestratorNode, LivepeerGateway],
) -> None:
    node, gw = offchain
    session = gw.ai_session(UPSCALE, UPSCALER)
    info = session.info
    assert _prices(info) == {
        (UPSCALE, UPSCALER): UPSCALE_PRICE,
        (LLM, ECHO): Fraction(3, 2),
        (VIDEO, VIDEO_MODEL): 0,
        (36, SPEECH_MODEL): 0,
    }
    assert price_from_net(info.price_info) == UPSCALE_PRICE  # the model asked for
    # Without AI capabilities asked, the transcoding price.
    assert price_from_net(gw.get_orchestrator().price_info) == 0
    fields = {"prompt": "a picture", "model_id": UPSCALER, "seed": "9"}
    r = gw.ai(session, "upscale", UPSCALE, UPSCALER, 48 * 36, files=_image(), fields=fields)
    assert r.status_code == 200, r.text
    (image,) = r.json()["images"]
    assert image["seed"] == 9 and image["nsfw"] is False
    url = image["url"]
    assert url.startswith(f"{node.url}/stream/") and url.split("?")[0].endswith(".png")
    got = gw.http.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert decode(got.content).shape == (144, 192, 3)
    # Served only as signed.
    assert gw.http.get(url.split("?")[0]).status_code == 404
    assert gw.http.get(url.replace("sig=", "sig=0")).status_code == 404
    # A gateway before the AI worker protocol gets the picture inline.
    r = gw.ai(
        session,
        "upscale",
        UPSCALE,
        UPSCALER,
        48 * 36,
        files=_image(),
        fields=fields,
        worker_protocol=False,
    )
    assert r.status_code == 200, r.text
    inline = r.json()["images"][0]["url"]
    assert inline.startswith("data:image/png;base64,")
    assert decode(base64.b64decode(inline.split(",", 1)[1])).shape == (144, 192, 3)


def test_image_to_video_answers_a_playable_mp4(
    offchain: tuple[OrchestratorNode, LivepeerGateway],
) -> None:
    _, gw = offchain
    session = gw.ai_session(VIDEO, VIDEO_MODEL)
    fields = {"model_id": VIDEO_MODEL, "height": "50", "width": "66", "fps": "7"}
    r = gw.ai(
        session, "image-to-video", VIDEO, VIDEO_MODEL, 50 * 66 * 25, files=_image(), fields=fields
    )
    assert r.status_code == 200, r.text
    (video,) = r.json()["images"]
    assert video["seed"] == 5
    got = gw.http.get(video["url"])
    assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(got.content), "r") as container:
        assert container.format.name.startswith("mov,mp4")
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (66, 50)
        assert stream.average_rate == 7
        frames = list(container.decode(video=0))
    assert len(frames) == FRAMES and frames[0].key_frame


def test_text_to_speech_audio_served_by_the_node(
    offchain: tuple[OrchestratorNode, LivepeerGateway],
) -> None:
    node, gw = offchain
    session = gw.ai_session(36, SPEECH_MODEL)
    body = {"model_id": SPEECH_MODEL, "text": "héllo"}
    r = gw.ai(session, "text-to-speech", 36, SPEECH_MODEL, 5000, body=body)
    assert r.status_code == 200, r.text
    url = r.json()["audio"]["url"]
    assert url.startswith(f"{node.url}/stream/") and url.split("?")[0].endswith(".wav")
    got = gw.http.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
    assert got.content == SPEECH


def test_llm_streams_server_sent_events(
    offchain: tuple[OrchestratorNode, LivepeerGateway],
) -> None:
    _, gw = offchain
    session = gw.ai_session(LLM, ECHO)
    body: dict[str, Any] = {
        "model": ECHO,
        "messages": [{"role": "user", "content": "one two three"}],
        "max_tokens": 8,
        "stream": True,
    }
    r = gw.ai(session, "llm", LLM, ECHO, 8, body=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(e[len("data: ") :]) for e in r.text.split("\n\n") if e]
    text = "".join(e["choices"][0]["delta"]["content"] for e in events)
    assert text == "one two three"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    r = gw.ai(session, "llm", LLM, ECHO, 8, body={**body, "stream": False})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "one two three"


def test_bad_ai_requests_get_golivepeers_status_and_text(
    offchain: tuple[OrchestratorNode, LivepeerGateway],
) -> None:
    node, gw = offchain
    session = gw.ai_session(UPSCALE, UPSCALER)
    fields = {"prompt": "x", "model_id": UPSCALER}

    def upscale(**kwargs: Any) -> tuple[int, str]:
        args = {"files": _image(), "fields": fields, **kwargs}
        r = gw.ai(session, "upscale", UPSCALE, UPSCALER, 48 * 36, **args)
        return r.status_code, r.text.strip()

    no_token = gw.ai_seg_data(session, UPSCALE, UPSCALER)
    no_token.ClearField("auth_token")
    forged = gw.ai_seg_data(session, UPSCALE, UPSCALER)
    forged.auth_token.token = b"\x00" * 32
    assert upscale(seg=no_token) == (403, "missing auth token")
    assert upscale(seg=forged) == (403, "invalid auth token")
    assert upscale(payment="!!")[0] == 402
    assert upscale(fields={**fields, "model_id": "no/such-model"}) == (
        503,
        "insufficient capacity",
    )
    assert upscale(files={"image": ("x.png", b"not a picture", "image/png")})[0] == 400
    empty = {"image": ("x.png", b"", "image/png")}
    assert upscale(files=empty) == (400, "image: a non-empty file is required")
    r = gw.ai(session, "llm", LLM, ECHO, 8, body={"model": ECHO, "messages": []})
    assert (r.status_code, r.text.strip()) == (400, "MaxTokens not specified")
    # The runner's refusal is the caller's error, with the runner's words.
    r = gw.ai(session, "llm", LLM, ECHO, 8, body={"model": ECHO, "messages": [], "max_tokens": 8})
    assert r.status_code == 400 and "messages" in r.text
    assert node.proc.poll() is None


# -- on chain ---------------------------------------------------------------------------------


@pytest.fixture
def paid(
    cluster: Cluster,
    devchain: DevChain,  # noqa: F811
    frames_runner: ScriptedRunner,
    speech_runner: ScriptedRunner,
) -> Iterator[tuple[OrchestratorNode, LivepeerGateway]]:
    cluster.env.update(chain_env(devchain))
    cluster.start_worker("--ai-models", _models(frames_runner, speech_runner))
    node = OrchestratorNode(cluster)
    gw = node.gateway(devchain.broadcaster.private_key)
    yield node, gw
    gw.close()
    node.close()


def _ev(info: net_pb2.OrchestratorInfo, sender: bytes) -> Fraction:
    params = params_from_net(info.ticket_params, price_from_net(info.price_info))
    return params.ticket(sender, 0).expected_value()


def test_upscale_paid_with_tickets_debits_price_times_pixels(
    paid: tuple[OrchestratorNode, LivepeerGateway], cluster: Cluster
) -> None:
    _, gw = paid
    balances = Balances(_redis(cluster))
    manifest = f"{UPSCALE}_{UPSCALER}"
    session = gw.ai_session(UPSCALE, UPSCALER)
    assert session.info.HasField("ticket_params")
    assert price_from_net(session.info.price_info) == UPSCALE_PRICE
    ev = _ev(session.info, gw.address)
    fields = {"prompt": "x", "model_id": UPSCALER}
    for width, height in [(48, 36), (40, 30), (64, 48)]:
        before = balances.get(gw.address, manifest)
        r = gw.ai(
            session,
            "upscale",
            UPSCALE,
            UPSCALER,
            width * height,
            files=_image(width, height),
            fields=fields,
        )
        assert r.status_code == 200, r.text
        got = gw.http.get(r.json()["images"][0]["url"])
        assert decode(got.content).shape == (height * 4, width * 4, 3)
        after = balances.get(gw.address, manifest)
        # Tickets credited at their expected value, input pixels debited at the model's price.
        expected = before + session.sent[-1] * ev - width * height * UPSCALE_PRICE
        assert after == expected, (before, after, session.sent, ev)
        assert after == session.balance  # the gateway's own account agrees
    assert sum(session.sent) > 0


def test_bad_payments_for_ai_are_refused_without_charge(
    paid: tuple[OrchestratorNode, LivepeerGateway], cluster: Cluster
) -> None:
    _, gw = paid
    balances = Balances(_redis(cluster))
    manifest = f"{UPSCALE}_{UPSCALER}"
    fields = {"prompt": "x", "model_id": UPSCALER}
    # Tickets quoted for transcoding (GetOrchestrator without the model) do not pay for it.
    transcoding = gw.session()
    assert price_from_net(transcoding.info.price_info) < UPSCALE_PRICE
    r = gw.ai(transcoding, "upscale", UPSCALE, UPSCALER, 48 * 36, files=_image(), fields=fields)
    assert r.status_code == 400 and "invalid expected price" in r.text, r.text
    assert balances.get(gw.address, manifest) == 0
    # A SegData signed by someone else.
    session = gw.ai_session(UPSCALE, UPSCALER)
    seg = gw.ai_seg_data(session, UPSCALE, UPSCALER)
    seg.sig = bytes(65)
    r = gw.ai(
        session, "upscale", UPSCALE, UPSCALER, 48 * 36, files=_image(), fields=fields, seg=seg
    )
    assert (r.status_code, r.text.strip()) == (403, "ErrSegSig")
    # A gateway that believes it has credit here sends no tickets: there is none.
    session.balance = Fraction(10**18)
    r = gw.ai(session, "upscale", UPSCALE, UPSCALER, 48 * 36, files=_image(), fields=fields)
    assert (r.status_code, r.text.strip()) == (400, "Insufficient balance")
    assert session.sent[-1] == 0 and balances.get(gw.address, manifest) == 0
    # A model without a price in wei is not worked for tickets.
    unpriced = gw.ai_session(27, DOLLAR_MODEL)
    assert (27, DOLLAR_MODEL) not in _prices(unpriced.info)
    body = {"model_id": DOLLAR_MODEL, "prompt": "x"}
    r = gw.ai(unpriced, "text-to-image", 27, DOLLAR_MODEL, 512 * 512, body=body)
    assert (r.status_code, r.text.strip()) == (
        400,
        f"no price set for text-to-image {DOLLAR_MODEL}",
    )
    assert balances.get(gw.address, f"27_{DOLLAR_MODEL}") == 0
    # A job the runner refuses after the payment: its tickets are credited, nothing debited.
    session.balance = Fraction(0)
    big = {"image": ("big.png", png(picture(1100, 1000)), "image/png")}
    r = gw.ai(session, "upscale", UPSCALE, UPSCALER, 1100 * 1000, files=big, fields=fields)
    assert r.status_code == 400 and "at most" in r.text, r.text
    assert session.sent[-1] > 0
    assert balances.get(gw.address, manifest) == session.sent[-1] * _ev(session.info, gw.address)


def _redis(cluster: Cluster) -> redis.Redis:
    return redis.Redis.from_url(redis_py_url(cluster.settings.redis_registry_url()))


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(("NaN", "Infinity", "-1e999", "1" + "0" * 400)),
    st.text(max_size=12),
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
_FIELDS = st.sampled_from(
    (
        "model_id", "prompt", "seed", "height", "width", "fps", "num_images_per_prompt",
        "num_inference_steps", "max_tokens", "messages", "stream", "temperature", "text",
        "safety_check", "extra",
    )
)  # fmt: skip


def test_ai_requests_with_any_fields_get_an_answer_or_a_refusal(
    offchain: tuple[OrchestratorNode, LivepeerGateway],
) -> None:
    """Fields of any JSON type and value, and image bytes that may not be a picture, on the
    node's JSON and multipart AI routes: an answer, or go-livepeer's refusal (400, 503 for a
    model it cannot run), never a server error; the node logs no unhandled exception."""
    node, gw = offchain
    upscale = gw.ai_session(UPSCALE, UPSCALER)
    llm = gw.ai_session(LLM, ECHO)
    seen: dict[int, int] = {}

    @given(
        route=st.sampled_from(("llm", "upscale")),
        fields=st.dictionaries(_FIELDS, _VALUES, max_size=3),
        image=st.one_of(st.just(png(picture(8, 6))), st.just(b""), st.binary(max_size=200)),
    )
    @fuzz_settings(100, "FARM_WIRE_EXAMPLES")
    def answered(route: str, fields: dict[str, Any], image: bytes) -> None:
        # A valid request, with up to three of its fields replaced or added.
        if route == "llm":
            body = {"model": ECHO, "messages": [{"role": "user", "content": "hi"}], **fields}
            r = gw.ai(llm, "llm", LLM, ECHO, 1000, body=body)
        else:
            form = {"prompt": "a picture", "model_id": UPSCALER, "seed": "9"}
            form |= {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
            files = {"image": ("image.png", image, "image/png")}
            r = gw.ai(upscale, "upscale", UPSCALE, UPSCALER, 48 * 36, files=files, fields=form)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code in (200, 400, 503), (route, fields, r.status_code, r.text[:300])

    answered()
    assert seen.get(200, 0) >= 1 and seen.get(400, 0) >= 1, seen
    logs = [p.read_text(errors="replace") for p in node.cluster.home.glob("*.log")]
    assert not any("Traceback" in text for text in logs)
