"""The orchestrator: what a go-livepeer gateway gets from GetOrchestrator and ``/segment``.

One ``Orchestrator`` per node process. It answers GetOrchestrator with this node's service
URI, price, ticket params for the caller, the live cluster's capabilities and a session token;
it checks a segment's signature, token and payment in go-livepeer's order, credits tickets at
their expected value, submits the segment through the cluster's durable job path (a job row,
the reconciler, rendition verification), debits price x encoded pixels, and answers a signed
``TranscodeResult`` whose URLs this node serves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import quote

import redis
from eth_utils.address import to_checksum_address
from sqlalchemy import create_engine

from chain.errors import (
    ChainError,
    InsufficientSenderReserve,
    InvalidRecipient,
    InvalidRecipientRand,
    InvalidSender,
    InvalidSignature,
    NonceReplayed,
    SenderUnlocking,
    TicketError,
    TicketParamsExpired,
    TooManyNonces,
)
from chain.params import RecipientConfig, TicketParams, TicketParamsIssuer, issue_params
from chain.payment import Payment, params_to_net, price_to_net
from chain.queue import TicketQueue
from chain.signing import Signer, keccak256, recover
from chain.tickets import ZERO_ADDRESS, Ticket
from chain.validation import RedisNonceStore, TicketReceiver, winners_of
from farm import __version__
from farm import metrics as farm_metrics
from farm.blobstore import BlobMissing
from farm.chain_tasks import announce_ticket_queue
from farm.client import FarmClient, JobFailedError, JobResult, JobTimeout
from farm.errors import FarmError, NoCapacity
from farm.golivepeer import net_pb2
from farm.golivepeer.wire import capability_words
from farm.jobs import JobExists, JobView
from farm.orchestrator.aiprices import ai_price_infos, quoted_price
from farm.orchestrator.balances import Balances
from farm.orchestrator.chainview import CachedChain
from farm.orchestrator.segdata import SignedSegment, signature_valid
from farm.orchestrator.tokens import AuthTokens, TokenRefused
from farm.publish import job_timeout_s
from farm.registry import Capabilities, redis_py_url
from farm.resources import Resources
from farm.settings import NodeSettings

if TYPE_CHECKING:
    from chain.client import ChainClient

__all__ = ["PRICE_KEY", "Orchestrator", "SegmentRefused", "segment_job_id"]

log = logging.getLogger(__name__)
_EXPIRES = re.compile(r"[0-9]{1,18}")
_SIG = re.compile(r"[0-9a-f]{32}")
_BLOB_KEY = re.compile(r"[\x21-\x7e]{1,512}")
_T = TypeVar("_T")

#: Where the operator's transcoding price lives (``price_per_unit/pixels_per_unit``), shared by
#: every node process of the cluster (``farm chain config --price-per-unit``).
PRICE_KEY: Final = "farm:orch:price"
SESSIONS_KEY: Final = "farm:orch:sessions"
#: go-livepeer ends a transcoding session after this long without a segment.
SESSION_IDLE_S: Final = 70.0
#: Capabilities every farm worker has (go-livepeer's ids): H.264, MPEG-TS, MP4, fractional
#: frame rates, direct storage, the four H.264 profiles, GOP, AuthToken.
BASE_CAPABILITIES: Final = frozenset({0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12})
#: The one capability a gateway must ask for (go-livepeer's MandatoryOCapabilities).
MANDATORY: Final = frozenset({12})
_CODEC_CAPABILITIES: Final = {"hevc": {15, 16}, "vp9": {18, 20}}
#: AI pipelines as go-livepeer's capability ids.
AI_CAPABILITIES: Final = {
    "text-to-image": 27,
    "image-to-image": 28,
    "image-to-video": 29,
    "upscale": 30,
    "audio-to-text": 31,
    "segment-anything-2": 32,
    "llm": 33,
    "image-to-text": 34,
    "live-video-to-video": 35,
    "text-to-speech": 36,
}


class SegmentRefused(FarmError):
    """Raised when a gateway's request is refused before any work: ``status`` and the text
    are go-livepeer's for the same refusal."""

    code = "segment_refused"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Transcoded:
    """A finished segment: the result to send, and what it cost the sender."""

    result: net_pb2.TranscodeResult
    pixels: int
    fee: Fraction


@dataclass
class _Cache:
    """A price read at most every ``ttl_s`` seconds."""

    ttl_s: float
    read: Callable[[], Fraction]
    _at: float = float("-inf")
    _value: Fraction = field(default_factory=Fraction)

    def get(self) -> Fraction:
        now = time.monotonic()
        if now - self._at > self.ttl_s:
            self._value, self._at = self.read(), now
        return self._value


class Orchestrator:
    """The Livepeer orchestrator role of one node process."""

    def __init__(
        self,
        settings: NodeSettings,
        res: Resources,
        client: FarmClient,
        chain: ChainClient | None = None,
    ) -> None:
        self.settings = settings
        self.res = res
        self.client = client
        self.chain = CachedChain(chain, settings.chain_cache_s) if chain is not None else None
        self.service_uri = settings.orchestrator_uri()
        secret = settings.secret.get_secret_value().encode()
        self.tokens = AuthTokens(secret)
        self._redis = redis.Redis.from_url(redis_py_url(settings.redis_registry_url()))
        self.balances = Balances(self._redis)
        key = settings.eth_private_key
        self.signer = (
            Signer(bytes.fromhex(key.get_secret_value().removeprefix("0x"))) if key else None
        )
        self._url_key = hmac.digest(secret, b"farm orchestrator rendition urls", hashlib.sha256)
        self._price = _Cache(1.0, self._read_price)
        self._live: tuple[float, list[Capabilities]] = (float("-inf"), [])
        self._side = ThreadPoolExecutor(max_workers=8, thread_name_prefix="orch-side")
        self.issuer: TicketParamsIssuer | None = None
        self.receiver: TicketReceiver | None = None
        self.queue: TicketQueue | None = None
        if self.chain is not None:
            if self.signer is None:
                raise ValueError("an orchestrator on chain needs FARM_ETH_PRIVATE_KEY")
            config = RecipientConfig(
                ev=settings.ticket_ev_wei,
                redeem_gas=settings.redeem_gas,
                max_face_value=settings.ticket_max_face_value_wei,
            )
            # One params secret for the cluster, so any node process validates any ticket.
            ticket_secret = hmac.digest(secret, b"farm orchestrator ticket params", hashlib.sha256)
            self.issuer = TicketParamsIssuer(self.signer.address, config, ticket_secret)
            self.receiver = TicketReceiver(self.issuer, self.chain, RedisNonceStore(self._redis))
            self.queue = TicketQueue(create_engine(settings.ticket_queue_database()))
            self.queue.create_schema()
            announce_ticket_queue(settings)

    # -- what the node offers -------------------------------------------------------------

    @property
    def address(self) -> bytes:
        """The address that signs results (empty off-chain without a key, as go-livepeer)."""
        return self.signer.address if self.signer is not None else b""

    def _read_price(self) -> Fraction:
        raw = self._redis.get(PRICE_KEY)
        if raw:
            text = raw.decode() if isinstance(raw, bytes) else raw
            num, _, den = text.partition("/")
            return Fraction(int(num), int(den or "1"))
        return Fraction(self.settings.price_per_unit, self.settings.pixels_per_unit)

    @property
    def price(self) -> Fraction:
        """Wei per pixel this node quotes new sessions."""
        return self._price.get()

    def set_price(self, price_per_unit: int, pixels_per_unit: int) -> Fraction:
        """Quote ``price_per_unit`` wei per ``pixels_per_unit`` pixels from now on, on every node
        process of the cluster; params already issued keep the price they were issued with."""
        if price_per_unit < 0 or pixels_per_unit <= 0:
            raise ValueError("price_per_unit must be >= 0 and pixels_per_unit > 0")
        price = Fraction(price_per_unit, pixels_per_unit)
        self._redis.set(PRICE_KEY, f"{price.numerator}/{price.denominator}")
        self._price = _Cache(1.0, self._read_price)
        return price

    def live(self, within: float = 0.25) -> list[Capabilities]:
        """The live workers, read again when older than ``within`` heartbeats (they beat
        every ``heartbeat_s`` and live for three beats). The reply to a segment reads them
        at half that age while the cluster works on it, so the next segment's checks seldom
        wait for the registry."""
        now = time.monotonic()
        if now - self._live[0] > self.settings.heartbeat_s * within:
            try:
                self._live = (now, self.res.registry.live())
            except Exception as e:
                log.warning("worker registry unavailable: %s", e)
                return []
        return self._live[1]

    def capability_ids(self, live: list[Capabilities]) -> set[int]:
        """What the live cluster can do, as go-livepeer's capability ids."""
        if not live:
            return set(MANDATORY)
        ids = set(BASE_CAPABILITIES)
        for w in live:
            for codec in {*w.cpu_codecs, *w.gpu_codecs}:
                ids |= _CODEC_CAPABILITIES.get(codec, set())
            for model in w.ai_models:
                cap = AI_CAPABILITIES.get(str(model.get("pipeline")))
                if cap is not None:
                    ids.add(cap)
        return ids

    def capabilities(self, live: list[Capabilities]) -> net_pb2.Capabilities:
        caps = net_pb2.Capabilities(
            bitstring=capability_words(self.capability_ids(live)),
            mandatories=capability_words(MANDATORY),
            version=__version__,
        )
        capacity = sum(w.capacity for w in live if not w.ai_models)
        for video in self.capability_ids(live) - {12}:
            if video < 27:
                caps.capacities[video] = max(capacity, 1)
        for w in live:
            for model in w.ai_models:
                cap = AI_CAPABILITIES.get(str(model.get("pipeline")))
                if cap is None:
                    continue
                models = caps.constraints.PerCapability[cap].models
                entry = models[str(model.get("model_id", ""))]
                entry.warm = entry.warm or bool(model.get("warm"))
                entry.capacity += int(model.get("capacity", 1) or 1)
                entry.capacityInUse += int(model.get("load", 0) or 0)
                caps.capacities[cap] = caps.capacities[cap] + int(model.get("capacity", 1) or 1)
        return caps

    def hardware(self, live: list[Capabilities]) -> list[net_pb2.HardwareInformation]:
        """The workers' GPUs as NVML reported them (informational)."""
        out = []
        for w in live:
            if not w.gpus:
                continue
            info = net_pb2.HardwareInformation(pipeline="transcode", model_id=w.worker)
            for g in w.gpus:
                info.gpu_info[str(g.get("index", 0))].CopyFrom(
                    net_pb2.GPUComputeInfo(
                        id=str(g.get("uuid", "")),
                        name=str(g.get("name", "")),
                        memory_free=int(g.get("memory_free", 0) or 0),
                        memory_total=int(g.get("memory_total", 0) or 0),
                    )
                )
            out.append(info)
        return out

    def info(
        self,
        sender: bytes,
        token: net_pb2.AuthToken | None = None,
        *,
        price: Fraction | None = None,
        hardware: bool = True,
    ) -> net_pb2.OrchestratorInfo:
        """OrchestratorInfo for ``sender``: fresh ticket params, and ``token`` (a new session
        when None)."""
        live = self.live()
        quoted = self.price if price is None else price
        info = net_pb2.OrchestratorInfo(
            transcoder=self.service_uri,
            address=self.address,
            capabilities=self.capabilities(live),
            auth_token=token if token is not None else self.tokens.issue(),
        )
        info.price_info.CopyFrom(price_to_net(quoted))
        info.capabilities_prices.extend(ai_price_infos(live))
        if hardware:
            info.hardware.extend(self.hardware(live))
        if self.issuer is not None and self.chain is not None and self.queue is not None:
            params = _chain_call(
                lambda: self._ticket_params(sender, quoted),
            )
            info.ticket_params.CopyFrom(params_to_net(params))
        return info

    def _ticket_params(self, sender: bytes, price: Fraction) -> TicketParams:
        assert self.issuer is not None and self.chain is not None and self.queue is not None
        return issue_params(
            self.issuer, self.chain, sender, price, pending=self.queue.pending_face_value(sender)
        )

    # -- gRPC -----------------------------------------------------------------------------

    def get_orchestrator(self, request: net_pb2.OrchestratorRequest) -> net_pb2.OrchestratorInfo:
        """go-livepeer's GetOrchestrator: the caller's signature over its address, the session
        cap, then OrchestratorInfo. SegmentRefused with go-livepeer's text otherwise."""
        if self.chain is not None and (
            len(request.address) != 20 or not _address_signed(request.address, request.sig)
        ):
            raise SegmentRefused(
                403, "Invalid orchestrator request: orchestrator req sig check failed"
            )
        if self.sessions() >= self.settings.max_sessions:
            raise SegmentRefused(403, "Invalid orchestrator request: OrchestratorCapped")
        sender = bytes(request.address) if len(request.address) == 20 else ZERO_ADDRESS
        no_caps = not request.HasField("capabilities")
        # Asked for AI models: their summed price, which the ticket params are issued at.
        price = None if no_caps else quoted_price(request.capabilities, self.live())
        return self.info(sender, price=price, hardware=no_caps)

    def end_session(
        self, request: net_pb2.EndTranscodingSessionRequest
    ) -> net_pb2.EndTranscodingSessionResponse:
        """Forget the session (only the token's HMAC is checked, as go-livepeer does)."""
        session = self.tokens.check(
            request.auth_token if request.HasField("auth_token") else None, expiry=False
        )
        self._redis.zrem(SESSIONS_KEY, session)
        return net_pb2.EndTranscodingSessionResponse()

    def ping(self, value: bytes) -> bytes:
        """sign(value): how an orchestrator proves it holds its key."""
        return self.signer.sign_hash(keccak256(value)) if self.signer is not None else b""

    # -- sessions -------------------------------------------------------------------------

    def sessions(self) -> int:
        """Transcoding sessions with a segment in the last 70 s."""
        now = time.time()
        pipe = self._redis.pipeline()
        pipe.zremrangebyscore(SESSIONS_KEY, "-inf", now - SESSION_IDLE_S)
        pipe.zcard(SESSIONS_KEY)
        return int(pipe.execute()[1])

    def _touch(self, session: str) -> None:
        # A known session (the usual case) is refreshed in the same round trip that finds it.
        pipe = self._redis.pipeline(transaction=False)
        pipe.zscore(SESSIONS_KEY, session)
        pipe.zadd(SESSIONS_KEY, {session: time.time()}, xx=True)
        if pipe.execute()[0] is not None:
            return
        if self.sessions() >= self.settings.max_sessions:
            raise SegmentRefused(403, "OrchestratorCapped")
        self._redis.zadd(SESSIONS_KEY, {session: time.time()})

    # -- /segment -------------------------------------------------------------------------

    def check_segment(self, seg: SignedSegment, payment: Payment) -> str:
        """The credential checks of ``/segment`` in go-livepeer's order: signature, capabilities,
        token, capacity. The session id; SegmentRefused (403) otherwise."""
        names = [p.name for p in seg.profiles]
        if self.chain is not None and not signature_valid(seg.data, names, payment.sender):
            raise SegmentRefused(403, "ErrSegSig")
        if not seg.capabilities <= self.capability_ids(self.live()):
            raise SegmentRefused(403, "incompatible capabilities")
        try:
            session = self.tokens.check(
                seg.data.auth_token if seg.data.HasField("auth_token") else None
            )
        except TokenRefused as e:
            raise SegmentRefused(403, str(e)) from None
        self._touch(session)
        return session

    def process_payment(self, payment: Payment, session: str) -> Fraction:
        """Validate the tickets in go-livepeer's order and credit their expected value to
        (sender, session); the balance. SegmentRefused (400) with go-livepeer's text."""
        if self.chain is None:
            return Fraction(0)  # off chain nothing is paid, and no balance is checked
        if self.receiver is None or self.queue is None or payment.params is None:
            return self.balances.get(payment.sender, session)
        params = payment.params
        chain = self.chain
        assert chain is not None
        if not _chain_call(partial(chain.is_active_transcoder, self.address)):
            round_ = _chain_call(chain.current_round)
            raise SegmentRefused(
                400,
                f"orchestrator 0x{self.address.hex()} is inactive in round {round_}, "
                "cannot process payments",
            )
        receiver = self.receiver
        # go-livepeer's ticket-by-ticket order, with the nonces recorded in one round trip.
        receipts, error = _chain_call(
            partial(
                receiver.receive_tickets,
                payment.tickets,
                seed=params.seed,
                expiration_block=params.expiration_block,
                price_per_pixel=params.price_per_pixel,
            )
        )
        credit = Fraction(0)
        for receipt in receipts:
            farm_metrics.ticket_received(float(receipt.expected_value) / 1e9)
            if receipt.won:
                farm_metrics.winning_ticket_received()
            credit += receipt.expected_value
        winners = winners_of(receipts, params.expiration_block)
        refusal = None
        if error is not None:
            # About the first ticket without a receipt (the only one, for expired params).
            ticket = payment.tickets[min(len(receipts), len(payment.tickets) - 1)][0]
            refusal = SegmentRefused(400, golivepeer_text(error, ticket))
            if not isinstance(error, TicketParamsExpired):  # that one is not fatal
                farm_metrics.payment_refused(type(error).__name__)
                if _fatal(error):
                    self.queue.add_all(winners)  # the winners before a refused ticket count
                    raise refusal from error
        # Durable before the work starts (or the refusal goes out), so no winner is lost with
        # the request: the payment's winners in one transaction, written while the balance is.
        queued = self._side.submit(self.queue.add_all, winners) if winners else None
        try:
            balance = self.balances.add(payment.sender, session, credit)
        finally:
            if queued is not None:
                queued.result()
        if refusal is not None:
            raise refusal from error
        return balance

    def segment_price(self, payment: Payment) -> Fraction:
        """The price a segment is charged at: the one its tickets were quoted (the recipient
        rand binds it, so a sender cannot state a lower one), else the price quoted now."""
        if payment.params is not None:
            return payment.params.price_per_pixel
        return self.price if self.chain is not None else Fraction(0)

    def admit(self, seg: SignedSegment, payment: Payment) -> tuple[str, Fraction]:
        """Everything before the ``200``: credentials, payment, balance. (session, price)."""
        session = self.check_segment(seg, payment)
        price = self.segment_price(payment)
        balance = self.process_payment(payment, session)
        if self.chain is not None and price > 0 and balance < self.settings.ticket_ev_wei:
            raise SegmentRefused(400, "Insufficient balance")
        try:
            self.client.route(seg.profiles)
        except NoCapacity:
            raise SegmentRefused(403, "OrchestratorCapped") from None
        return session, price

    def transcode(
        self, seg: SignedSegment, data: bytes, payment: Payment, session: str, price: Fraction
    ) -> net_pb2.TranscodeResult:
        """Run the segment on the cluster; the TranscodeResult for the gateway (an ``error``
        result when the work failed: the sender is not charged)."""
        result = net_pb2.TranscodeResult(seq=seg.seq)
        try:
            job = self._job(segment_job_id(session, seg), seg, data, session)
            # The reply's fresh OrchestratorInfo (ticket params: chain reads and the sender's
            # pending winners) is built while the cluster works: after the submit, whose
            # round trips it would slow (one interpreter lock), before the result.
            info = self._side.submit(_chain_call, partial(self._reply_info, payment, seg, price))
            done = self.client.wait(job, timeout=job_timeout_s(seg.duration_s))
        except NoCapacity:
            result.error = "OrchestratorCapped"
            return result
        except (JobFailedError, JobTimeout, FarmError) as e:
            log.warning(
                "segment %s/%d of session %s failed: %s", seg.manifest_id, seg.seq, session, e
            )
            result.error = str(e)
            return result
        fee = price * done.encoded_pixels
        # The debit's round trip runs while the result is signed; both end before the answer
        # goes out (the sender's next segment is checked against the debited balance).
        debit = self._side.submit(self.balances.add, payment.sender, session, -fee) if fee else None
        try:
            result.data.CopyFrom(self._transcode_data(seg, session, done))
        finally:
            if debit is not None:
                debit.result()
        result.info.CopyFrom(info.result())
        return result

    def _reply_info(
        self, payment: Payment, seg: SignedSegment, price: Fraction
    ) -> net_pb2.OrchestratorInfo:
        self.live(within=0.125)  # fresh for the stream's next segment, read while we wait
        return self.info(payment.sender, seg.data.auth_token, price=price, hardware=False)

    def _job(self, job_id: str, seg: SignedSegment, data: bytes, session: str) -> JobView:
        """The job for a segment: the one already made for it unless that one failed.

        A segment sent again (the gateway retried) finds its job by id: the insert is tried
        first, since most segments are new, and a taken id is read back. Its input is
        written again meanwhile, the same bytes (the id hashes them). The segments of one
        stream (the gateway's session and manifest) share a stream key, so they go to the
        worker that keeps the stream's encoders open (farm.media.encoders)."""
        submit = partial(
            self.client.submit,
            data,
            seg.profiles,
            fmt=seg.format,
            duration=seg.duration_s,
            stream=f"{session}/{seg.manifest_id}",
            keccak=self.signer is not None,
        )
        try:
            return submit(job_id=job_id)
        except JobExists:
            job = self.client.get(job_id)
        if not job.final or job.state == "done":
            return job
        return submit(job_id=f"{job_id}-{uuid.uuid4().hex[:8]}")

    def _transcode_data(
        self, seg: SignedSegment, session: str, done: JobResult
    ) -> net_pb2.TranscodeData:
        by_name = {r.name: r for r in done.renditions}
        renditions = [by_name[p.name] for p in seg.profiles]
        # The renditions' hashes are signed (an off-chain node without a key signs nothing).
        # The cluster's own workers hash them as they store them; a result recorded through
        # the remote transcoders' API carries no hash (the API keeps only the fields it
        # checks), so those renditions are read and hashed here, side by side.
        hashes: list[bytes] | None = None
        if self.signer is not None:
            known = [r.keccak for r in renditions if r.keccak is not None]
            if len(known) == len(renditions):
                hashes = [bytes.fromhex(h) for h in known]
            else:
                read = self.client.rendition_bytes
                hashes = list(self._side.map(lambda r: keccak256(read(r)), renditions))
        data = net_pb2.TranscodeData()
        ext = "mp4" if seg.format == "mp4" else "ts"
        for p, r in zip(seg.profiles, renditions, strict=True):
            path = f"/stream/{session}/{quote(p.name)}/{seg.seq}.{ext}"
            data.segments.append(
                net_pb2.TranscodedSegmentData(url=self.publish(path, r.key), pixels=r.pixels)
            )
        if self.signer is not None and hashes is not None:
            data.sig = self.signer.sign_hash(keccak256(b"".join(hashes)))
        return data

    # -- rendition URLs -------------------------------------------------------------------

    def sign_path(self, path: str, key: str, now: float | None = None) -> str:
        """``path`` serving the blob ``key``, with an expiry and a signature over the three
        (go-livepeer gateways carry the query along unread). The URL names its blob, so
        handing one out writes nothing anywhere."""
        expires = int((now if now is not None else time.time()) + self.settings.rendition_ttl_s)
        mac = self._url_mac(path, expires, key)
        return f"{path}?expires={expires}&key={quote(key, safe='')}&sig={mac}"

    def _url_mac(self, path: str, expires: int | str, key: str) -> str:
        message = f"{path}\n{expires}\n{key}".encode()
        return hmac.digest(self._url_key, message, hashlib.sha256)[:16].hex()

    def publish(self, path: str, key: str) -> str:
        """The signed URL serving the blob ``key`` at ``path`` for ``rendition_ttl_s``."""
        return self.service_uri + self.sign_path(path, key)

    def rendition(self, path: str, expires: str | None, key: str | None, sig: str | None) -> bytes:
        """The blob behind a signed ``/stream/...`` URL; SegmentRefused (404, go-livepeer's
        ``ErrNotFound``) when the URL is unsigned, forged, expired or its blob gone."""
        # ASCII only: int() reads other scripts' digits, and compare_digest refuses non-ASCII.
        if not (
            expires
            and key
            and sig
            and _EXPIRES.fullmatch(expires)
            and _BLOB_KEY.fullmatch(key)
            and _SIG.fullmatch(sig)
        ):
            raise SegmentRefused(404, "ErrNotFound")
        if not hmac.compare_digest(self._url_mac(path, expires, key), sig):
            raise SegmentRefused(404, "ErrNotFound")
        if int(expires) < time.time():
            raise SegmentRefused(404, "ErrNotFound")
        try:
            return self.res.blobs.get(key)
        except (BlobMissing, ValueError):
            raise SegmentRefused(404, "ErrNotFound") from None

    def close(self) -> None:
        self._side.shutdown(wait=False, cancel_futures=True)
        if self.chain is not None:
            self.chain.close()
        self._redis.close()


def segment_job_id(session: str, seg: SignedSegment) -> str:
    """The job of a segment in a session. The same segment and ladder sent again (a gateway
    retrying after a lost answer) is the same job: it is waited for, not transcoded twice.
    The segment is known by its signed hash, which ``/segment`` checks against its bytes
    before any job is made."""
    ladder = json.dumps([p.to_json() for p in seg.profiles], sort_keys=True)
    digest = keccak256(seg.data.hash + ladder.encode() + seg.format.encode())[:6].hex()
    return f"orch-{session}-{seg.manifest_id}-{seg.seq}-{digest}"


def _address_signed(address: bytes, sig: bytes) -> bool:
    """Whether ``sig`` is sign(checksummed address string) by ``address``."""
    message = to_checksum_address(address).encode()
    try:
        return recover(keccak256(message), sig) == address
    except Exception:
        return False


def _fatal(e: TicketError) -> bool:
    """go-livepeer's fatal ticket errors end the payment at once; the rest stop crediting."""
    return isinstance(e, SenderUnlocking | InvalidRecipient | InvalidSender | InvalidRecipientRand)


def golivepeer_text(e: TicketError, ticket: Ticket) -> str:
    """A refused ticket in go-livepeer's words (its gateway matches some of them)."""
    sender = f"0x{ticket.sender.hex()}"
    if isinstance(e, SenderUnlocking):
        return f"deposit and reserve for sender {sender} is set to unlock soon"
    if isinstance(e, InvalidRecipient):
        return "invalid ticket recipient"
    if isinstance(e, InvalidSender):
        return "invalid ticket sender"
    if isinstance(e, InvalidRecipientRand):
        return "invalid recipientRand for ticket recipientRandHash"
    if isinstance(e, InvalidSignature):
        return "invalid ticket signature"
    if isinstance(e, NonceReplayed):
        return (
            f"invalid ticket senderNonce: already seen sender={sender} nonce={ticket.sender_nonce}"
        )
    if isinstance(e, TooManyNonces):
        return (
            f"invalid ticket senderNonce: too many values sender={sender} "
            f"nonce={ticket.sender_nonce}"
        )
    if isinstance(e, TicketParamsExpired):
        return "TicketParams expired"
    return str(e)


def _chain_call(fn: Callable[[], _T]) -> _T:
    """Chain reads behind a request: a sender without reserve is the sender's problem (go-livepeer
    answers 500 for it on ``/segment``); the chain unreachable is this node's."""
    try:
        return fn()
    except InsufficientSenderReserve as e:
        raise SegmentRefused(500, "Internal Server Error") from e
    except TicketError:
        raise
    except ChainError as e:
        log.warning("chain unavailable: %s", e)
        raise SegmentRefused(500, "Internal Server Error") from e
