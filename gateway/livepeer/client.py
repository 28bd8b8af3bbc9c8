"""One Livepeer orchestrator, as go-livepeer's gateway (the broadcaster) uses it.

``GetOrchestrator`` over gRPC with the gateway's signed address, then per segment
``POST <transcoder>/segment`` with a signed ``SegData`` in ``Livepeer-Segment`` and a
``net.Payment`` from the gateway's deposit in ``Livepeer-Payment``, then a GET of every
rendition URL. gRPC is spoken over httpx's HTTP/2 (a unary call is one POST of a framed
message), so the gRPC calls and the downloads share one connection per orchestrator; segments
are posted on a second, HTTP/1.1 one (:meth:`LivepeerOrchestrator.uploads`). Both follow one
certificate rule: any certificate, as go-livepeer's gateway accepts (orchestrators make a
self-signed one at each start), or the pinned one.

Payments follow go-livepeer's broadcaster: per (orchestrator, session) a balance; before a
segment the balance is reserved and enough tickets are sent to bring it to
max(fee, EV), with fee = fee pixels x 1.02 x price; a result with data leaves
reserve + tickets - price x encoded pixels, an error result leaves nothing, no answer restores
the reserve. A refreshed ``info`` in a result is adopted (its nonces start again). A session is
renewed from GetOrchestrator when its auth token is within 180 s of expiry or its ticket params
have expired, with a new balance (the orchestrator keys balances by session).

Results are checked as go-livepeer's gateway checks them when it verifies: the signature over
the renditions must recover to the orchestrator's address (when the gateway is on chain), and
each rendition must hold exactly the pixels it claims, as decoding it would count them (read
from its packets where that count is sure to be the decoder's, farm.media.pixels).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final
from urllib.parse import unquote

import httpx
from eth_utils.address import to_checksum_address
from google.protobuf.message import DecodeError

from chain import pm_pb2
from chain.errors import ChainError
from chain.payment import MAX_TICKETS, params_from_net, price_from_net
from chain.sender import FEE_MARGIN, TicketSender, fee_pixels, tickets_needed
from chain.signing import keccak256, recover
from farm.errors import FarmError, InputCorrupt, InputInvalid, RetryableError
from farm.media.pixels import PixelCount, rendition_pixels
from farm.media.profiles import VideoProfile
from farm.protocol import (
    AddressRefused,
    FetchPolicy,
    FrameError,
    MessageReader,
    flatten,
    frame,
    net_pb2,
    pinned_context,
    seg_data_profiles,
)

__all__ = [
    "MAX_TICKET_EV",
    "REFRESH_MARGIN_S",
    "Broadcaster",
    "LivepeerOrchestrator",
    "LivepeerResult",
    "NetworkRendition",
    "OrchestratorRefused",
    "OrchestratorUnreachable",
    "ResultInvalid",
    "counted_pixels",
    "manifest_id",
    "read_body",
    "same_origin",
]

log = logging.getLogger(__name__)

#: A session is renewed this long before its auth token expires (go-livepeer's margin).
REFRESH_MARGIN_S: Final = 180
#: go-livepeer's -maxTicketEV default: params asking more per ticket are refused.
MAX_TICKET_EV: Final = 3_000_000_000_000
#: go-livepeer's limit on a rendition download.
MAX_RENDITION_BYTES: Final = 300_000_000
#: The most an orchestrator's reply to a call or a segment may hold (gRPC's default limit on
#: a received message): a TranscodeResult or an OrchestratorInfo is a few kilobytes.
MAX_REPLY_BYTES: Final = 4 * 1024 * 1024
#: What is kept of a refusal's text.
MAX_REFUSAL_BYTES: Final = 64 * 1024
_ZERO_ADDRESS: Final = b"\x00" * 20
_GRPC_HEADERS: Final = {"content-type": "application/grpc", "te": "trailers"}


class OrchestratorUnreachable(RetryableError):
    """The orchestrator could not be reached or did not answer in time."""

    code = "orchestrator_unreachable"


class OrchestratorRefused(RetryableError):
    """The orchestrator refused the call (its answer says why) or answered nonsense."""

    code = "orchestrator_refused"


class ResultInvalid(RetryableError):
    """A result that fails go-livepeer's verification: a signature that does not recover to the
    orchestrator's address, or renditions whose decoded pixels differ from those claimed."""

    code = "result_invalid"


class Broadcaster:
    """The gateway's identity on the network: its sender key (None: off chain, where payments
    are empty and nothing is signed) and its GetOrchestrator request, made once."""

    def __init__(self, key: str | None = None) -> None:
        self.sender = TicketSender(key) if key else None
        request = net_pb2.OrchestratorRequest(address=self.address)
        if self.sender is not None:
            checksummed = to_checksum_address(self.address).encode()
            request.sig = self.sign(keccak256(checksummed))
        self.request = request.SerializeToString()

    @property
    def on_chain(self) -> bool:
        return self.sender is not None

    @property
    def address(self) -> bytes:
        return self.sender.address if self.sender is not None else _ZERO_ADDRESS

    def sign(self, digest: bytes) -> bytes:
        return self.sender.signer.sign_hash(digest) if self.sender is not None else b""


@dataclass
class Session:
    """A transcoding session at one orchestrator: its latest info and the balance there."""

    info: net_pb2.OrchestratorInfo
    balance: Fraction = Fraction(0)
    nonce: int = 0
    #: The price quoted when the session began (None: read from ``info``).
    initial_price: Fraction | None = None
    used_at: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.initial_price is None:
            self.initial_price = price_from_net(self.info.price_info)

    @property
    def session_id(self) -> str:
        return str(self.info.auth_token.session_id)


@dataclass(frozen=True, slots=True)
class NetworkRendition:
    """One downloaded and verified rendition."""

    name: str
    url: str
    format: str
    width: int
    height: int
    frames: int
    pixels: int
    data: bytes


@dataclass(frozen=True, slots=True)
class LivepeerResult:
    """A verified segment result: its renditions (in profile order) and the tickets sent."""

    session_id: str
    renditions: tuple[NetworkRendition, ...]
    pixels: int
    price: Fraction
    tickets: int


class LivepeerOrchestrator:
    """go-livepeer's broadcaster side against the orchestrator at ``address``."""

    def __init__(
        self,
        name: str,
        address: str,
        broadcaster: Broadcaster,
        *,
        cert_fingerprint: str | None = None,
        timeout_s: float = 3.0,
        block_number: Callable[[], int] | None = None,
        max_ticket_ev: int = MAX_TICKET_EV,
        funds: Callable[[], tuple[int, int, bool]] | None = None,
        policy: FetchPolicy | None = None,
    ) -> None:
        self.name = name
        #: Which non-public addresses a delegated transcoder URI may name (FARM_FETCH_ALLOW).
        self.policy = policy or FetchPolicy()
        #: The gateway's (deposit, reserve, unlocking) in TicketBroker (None: not checked).
        self.funds = funds
        self.max_ticket_ev = max_ticket_ev
        self.address = address.rstrip("/")
        self.broadcaster = broadcaster
        self.cert_fingerprint = cert_fingerprint
        self.timeout_s = timeout_s
        #: The chain's current (L1) block, to tell expired ticket params (None: not checked).
        self.block_number = block_number
        self._http: httpx.Client | None = None
        self._uploads: httpx.Client | None = None
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._pool: ThreadPoolExecutor | None = None

    # -- transport ----------------------------------------------------------------------------
    def http(self) -> httpx.Client:
        """An HTTP/2 client that accepts the orchestrator's certificate as go-livepeer does, or
        only the pinned one; made again after :meth:`reset`, so a pin is checked afresh."""
        with self._lock:
            self._connect()
            assert self._http is not None
            return self._http

    def uploads(self) -> httpx.Client:
        """The HTTP/1.1 client segments are posted and renditions downloaded with, under the
        same certificate rule (gRPC stays on HTTP/2).

        An orchestrator speaks both on its one port. Over HTTP/2 a segment upload waits for
        the orchestrator's flow-control window (64 KiB per stream unless it advertises more,
        as Python HTTP/2 servers do not) to be opened again every few frames: a 500 KB
        segment took about 15 round trips, 2 to 4 times as long as over HTTP/1.1. A download
        waits the same way for the window this side gives; a result's renditions come down
        side by side, one connection each from the pool."""
        with self._lock:
            self._connect()
            assert self._uploads is not None
            return self._uploads

    def _connect(self) -> None:
        """Make the clients (under ``_lock``)."""
        if self._http is not None and self._uploads is not None:
            return
        parsed = urllib.parse.urlsplit(self.address)
        if parsed.scheme == "http":
            # go-livepeer serves cleartext gRPC as h2c: HTTP/2 by prior knowledge.
            self._http = httpx.Client(http1=False, http2=True, timeout=self.timeout_s)
            self._uploads = httpx.Client(timeout=self.timeout_s)
            return
        host, port = parsed.hostname or "", parsed.port or 443
        context = (
            pinned_context(host, port, self.cert_fingerprint, self.timeout_s)
            if self.cert_fingerprint
            else _any_certificate()
        )
        self._http = httpx.Client(http2=True, verify=context, timeout=self.timeout_s)
        self._uploads = httpx.Client(verify=context, timeout=self.timeout_s)

    def reset(self) -> None:
        with self._lock:
            for client in (self._http, self._uploads):
                if client is not None:
                    client.close()
            self._http = self._uploads = None

    def _unary(self, base: str, method: str, request: bytes, timeout: float) -> bytes:
        url = f"{base.rstrip('/')}/net.Orchestrator/{method}"
        r: httpx.Response | None = None
        deadline = time.monotonic() + timeout
        for last in (False, True):
            # Both calls are safe to repeat: one dropped connection is tried once more.
            try:
                with self.http().stream(
                    "POST", url, content=frame(request), headers=_GRPC_HEADERS, timeout=timeout
                ) as r:
                    content = read_body(r, MAX_REPLY_BYTES, deadline, method)
                break
            except (httpx.HTTPError, OSError) as e:
                self.reset()
                if last or not isinstance(e, httpx.RemoteProtocolError):
                    raise OrchestratorUnreachable(f"{method}: {e.__class__.__name__}") from e
                log.info("orchestrator %s: %s: %r; trying again", self.name, method, e)
        assert r is not None
        status = r.headers.get("grpc-status")
        message = unquote(r.headers.get("grpc-message", ""))
        if r.status_code != 200 or status not in (None, "0"):
            raise OrchestratorRefused(f"{method}: {message or f'HTTP {r.status_code}'}")
        if r.http_version != "HTTP/2":
            raise OrchestratorRefused(f"{method}: the orchestrator does not speak HTTP/2")
        try:
            replies = MessageReader().feed(content)
        except FrameError as e:
            raise OrchestratorRefused(f"{method}: malformed reply ({e})") from e
        if not replies:
            raise OrchestratorRefused(f"{method}: no reply{f' ({message})' if message else ''}")
        return replies[0]

    def get_orchestrator(
        self, base: str | None = None, request: bytes | None = None
    ) -> net_pb2.OrchestratorInfo:
        """GetOrchestrator with the gateway's signed address (``request``: another
        OrchestratorRequest, one asking for AI models); the info, checked as go-livepeer's
        discovery checks it."""
        raw = self._unary(
            base or self.address,
            "GetOrchestrator",
            request or self.broadcaster.request,
            self.timeout_s,
        )
        try:
            info = net_pb2.OrchestratorInfo.FromString(raw)
        except DecodeError as e:
            raise OrchestratorRefused(f"GetOrchestrator: not an OrchestratorInfo ({e})") from e
        self._check_info(info)
        return info

    def _check_info(self, info: net_pb2.OrchestratorInfo) -> None:
        if not info.transcoder:
            raise OrchestratorRefused("the orchestrator takes no work (no transcoder URI)")
        self._check_transcoder(info.transcoder)
        if not info.HasField("auth_token") or not info.auth_token.session_id:
            raise OrchestratorRefused("the orchestrator sent no auth token")
        try:
            price = price_from_net(info.price_info)
        except ChainError as e:
            raise OrchestratorRefused(f"the orchestrator's price is invalid: {e}") from e
        if not self.broadcaster.on_chain:
            return
        if not info.HasField("ticket_params") or len(info.address) not in (0, 20):
            raise OrchestratorRefused("the orchestrator sent no ticket params")
        try:
            params = params_from_net(info.ticket_params, price)
        except ChainError as e:
            raise OrchestratorRefused(f"the orchestrator's ticket params are invalid: {e}") from e
        ev = params.ticket(self.broadcaster.address, 0).expected_value()
        if ev > params.face_value:  # equal: every ticket wins
            raise OrchestratorRefused("ticket faceValue too low")
        if ev > self.max_ticket_ev:
            raise OrchestratorRefused(f"ticket EV {float(ev):.4g} exceeds {self.max_ticket_ev}")
        if ev > 0 and self.funds is not None:
            # go-livepeer's sender: funded, not unlocking, and a face value its deposit covers
            # (-depositMultiplier 1).
            try:
                deposit, reserve, unlocking = self.funds()
            except ChainError as e:
                raise OrchestratorUnreachable(f"cannot read the gateway's deposit: {e}") from e
            if deposit <= 0 or reserve <= 0:
                raise OrchestratorRefused("the gateway's TicketBroker deposit or reserve is empty")
            if unlocking:
                raise OrchestratorRefused("the gateway's TicketBroker deposit is unlocking")
            if params.face_value > deposit:
                raise OrchestratorRefused(
                    f"ticket faceValue {params.face_value} exceeds the gateway's deposit {deposit}"
                )

    def _check_transcoder(self, uri: str) -> None:
        """Where segments will go: the orchestrator's own address, or another host it hands
        the work to (go-livepeer allows that), but not from a public orchestrator into the
        gateway's own network. A URI naming loopback, a private range or the cloud's metadata
        address is refused unless the orchestrator's address is itself one of those (the
        operator's own pool) or FARM_FETCH_ALLOW lists it. OrchestratorRefused otherwise."""
        try:
            t, own = urllib.parse.urlsplit(uri), urllib.parse.urlsplit(self.address)
            port, own_port = t.port, own.port
        except ValueError as e:
            raise OrchestratorRefused(f"the orchestrator's transcoder URI is invalid: {e}") from e
        if t.scheme not in ("http", "https") or not t.hostname:
            raise OrchestratorRefused("the orchestrator's transcoder URI is not an http(s) URL")
        if same_origin(uri, self.address) or not own.hostname:
            return
        try:
            self.policy.resolve(own.hostname, own_port or 443)
        except AddressRefused:
            return  # an orchestrator on the operator's own network: its choice stands
        try:
            self.policy.resolve(t.hostname, port or (443 if t.scheme == "https" else 80))
        except AddressRefused as e:
            raise OrchestratorRefused(
                f"the orchestrator's transcoder URI leaves the public network: {e}"
            ) from e

    # -- sessions -----------------------------------------------------------------------------
    def _expired(self, s: Session) -> bool:
        if time.time() > s.info.auth_token.expiration - REFRESH_MARGIN_S:
            return True
        if self.block_number is not None and s.info.HasField("ticket_params"):
            expiration = int.from_bytes(s.info.ticket_params.expiration_block, "big")
            try:
                latest = self.block_number()
            except ChainError as e:
                raise OrchestratorUnreachable(f"cannot read the chain's block: {e}") from e
            if expiration - latest <= 1:
                return True
        return False

    def session(self, stream: str) -> Session:
        """The stream's session here: the one it has, renewed when it is about to expire, or a
        new one from GetOrchestrator."""
        with self._lock:
            s = self._sessions.get(stream)
        if s is not None and not self._expired(s):
            return s
        base = s.info.transcoder if s is not None else None
        fresh = Session(self.get_orchestrator(base))
        with self._lock:
            self._sessions[stream] = fresh
        return fresh

    def ai_session(self, capability: int, model: str) -> Session:
        """The session for AI work on (capability, model): asked for with the model as a
        constraint, so the price and ticket params are the model's (go-livepeer's AI
        gateway); renewed as a stream's session is. Its balance is the orchestrator's for
        the manifest ``<capability>_<model>``."""
        key = f"ai:{capability}_{model}"
        with self._lock:
            s = self._sessions.get(key)
        if s is not None and not self._expired(s):
            return s
        request = net_pb2.OrchestratorRequest.FromString(self.broadcaster.request)
        request.capabilities.bitstring.extend(_bits(capability))
        request.capabilities.constraints.PerCapability[capability].models[model].SetInParent()
        base = s.info.transcoder if s is not None else None
        fresh = Session(self.get_orchestrator(base, request.SerializeToString()))
        with self._lock:
            self._sessions[key] = fresh
        return fresh

    def has_session(self, stream: str) -> bool:
        with self._lock:
            return stream in self._sessions

    def end(self, stream: str) -> None:
        """EndTranscodingSession for the stream's session, if it has one (best effort)."""
        with self._lock:
            s = self._sessions.pop(stream, None)
        if s is None:
            return
        request = net_pb2.EndTranscodingSessionRequest(auth_token=s.info.auth_token)
        try:
            self._unary(
                s.info.transcoder, "EndTranscodingSession", request.SerializeToString(), 2.5
            )
        except FarmError as e:
            log.info("orchestrator %s: ending session %s: %s", self.name, s.session_id, e)

    def end_idle(self, idle_s: float) -> int:
        """End the sessions no segment used for ``idle_s``: their streams have ended."""
        cutoff = time.monotonic() - idle_s
        with self._lock:
            idle = [k for k, s in self._sessions.items() if s.used_at < cutoff]
        for stream in idle:
            self.end(stream)
        return len(idle)

    # -- payments -----------------------------------------------------------------------------
    def payment(self, s: Session, fee: Fraction) -> tuple[str, int, Fraction, Fraction]:
        """Reserve the session's balance and pay up to max(fee, EV): (the Livepeer-Payment
        header, the tickets in it, the reserve, the tickets' value). Called under the
        session's lock."""
        info = s.info
        price = price_from_net(info.price_info)
        if s.initial_price is not None and price > 2 * s.initial_price:
            # go-livepeer's gateway will not pay a price more than doubled since the start.
            raise OrchestratorRefused(
                f"price {price} wei/pixel is more than double the session's {s.initial_price}"
            )
        reserved, s.balance = s.balance, Fraction(0)
        sender = self.broadcaster.sender
        if sender is None or not info.HasField("ticket_params"):
            return "", 0, reserved, Fraction(0)
        params = params_from_net(info.ticket_params, price)
        address = self.broadcaster.address
        ev = params.ticket(address, 0).expected_value()
        message = pm_pb2.Payment(sender=address)
        message.expected_price.CopyFrom(info.price_info)
        count = tickets_needed(reserved, max(fee, ev), ev) if ev > 0 else 0
        if count > MAX_TICKETS:
            # Params worth next to nothing a ticket would have the gateway sign without end;
            # an orchestrator refuses a payment of more tickets anyway.
            s.balance = reserved
            raise OrchestratorRefused(
                f"the fee needs {count} tickets of EV {float(ev):.4g} wei; "
                f"a payment carries at most {MAX_TICKETS}"
            )
        if count:
            message.ticket_params.CopyFrom(info.ticket_params)
            message.expiration_params.CopyFrom(info.ticket_params.expiration_params)
        for _ in range(count):
            s.nonce += 1
            ticket = params.ticket(address, s.nonce)
            message.ticket_sender_params.append(
                pm_pb2.TicketSenderParams(
                    sender_nonce=s.nonce, sig=sender.signer.sign_hash(ticket.hash())
                )
            )
        header = base64.b64encode(message.SerializeToString()).decode()
        return header, count, reserved, count * ev

    # -- segments -----------------------------------------------------------------------------
    def transcode(
        self,
        stream: str,
        seq: int,
        data: bytes,
        profiles: Sequence[VideoProfile],
        duration_s: float,
        fmt: str,
        deadline: float,
    ) -> LivepeerResult:
        """One segment of ``stream`` (the gateway's session id) on its session here, paid,
        downloaded and verified; errors of this module otherwise."""
        s = self.session(stream)
        s.used_at = time.monotonic()
        seg = net_pb2.SegData(
            manifestId=manifest_id(stream).encode(),
            seq=seq,
            hash=keccak256(data),
            profiles=b"invalid",
            duration=max(1, round(duration_s * 1000)),
            auth_token=s.info.auth_token,
        )
        seg_data_profiles(seg, profiles, fmt)
        names = [p.name for p in profiles]
        seg.sig = self.broadcaster.sign(keccak256(flatten(seg.manifestId, seq, seg.hash, names)))
        pixels = fee_pixels(
            ((p.width, p.height, Fraction(p.fps, p.fps_den or 1)) for p in profiles), duration_s
        )
        with s.lock:
            price = price_from_net(s.info.price_info)
            header, tickets, reserved, credit = self.payment(s, pixels * FEE_MARGIN * price)
        headers = {
            "Livepeer-Segment": base64.b64encode(seg.SerializeToString()).decode(),
            "Livepeer-Payment": header,
            "Content-Type": "video/MP2T",
        }
        try:
            with self.uploads().stream(
                "POST",
                f"{s.info.transcoder}/segment",
                content=data,
                headers=headers,
                timeout=max(0.1, deadline - time.monotonic()),
            ) as r:
                ok = r.status_code == 200
                cap = MAX_REPLY_BYTES if ok else MAX_REFUSAL_BYTES
                body = read_body(r, cap, deadline, f"segment {seq}", truncate=not ok)
        except (httpx.HTTPError, OSError, OrchestratorUnreachable, ResultInvalid) as e:
            with s.lock:
                s.balance += reserved  # no answer (or none taken): the reserve is restored
            self.reset()
            if isinstance(e, FarmError):
                raise
            raise OrchestratorUnreachable(f"segment {seq}: {e.__class__.__name__}") from e
        if not ok:
            with s.lock:
                s.balance += reserved
            text = body.decode(errors="replace").strip()[:300]
            raise OrchestratorRefused(f"segment {seq}: {r.status_code} {text}")
        try:
            result = net_pb2.TranscodeResult.FromString(body)
        except DecodeError as e:
            raise OrchestratorRefused(f"segment {seq}: not a TranscodeResult ({e})") from e
        info = s.info
        with s.lock:
            if result.HasField("info"):
                # go-livepeer adopts the refreshed info; its params' nonces start again.
                s.info, s.nonce = result.info, 0
            kind = result.WhichOneof("result")
            if kind == "data":
                claimed = sum(t.pixels for t in result.data.segments)
                s.balance += reserved + credit - price * claimed
            # An error (or no) result: the credit is counted as spent.
        if kind == "error":
            raise OrchestratorRefused(f"segment {seq}: {result.error[:300]}")
        if kind != "data":
            raise OrchestratorRefused(f"segment {seq}: the result holds neither data nor error")
        renditions = self._verify(info, result.data, profiles, fmt, deadline)
        return LivepeerResult(
            s.session_id, renditions, sum(r.pixels for r in renditions), price, tickets
        )

    def _verify(
        self,
        info: net_pb2.OrchestratorInfo,
        data: net_pb2.TranscodeData,
        profiles: Sequence[VideoProfile],
        fmt: str,
        deadline: float,
    ) -> tuple[NetworkRendition, ...]:
        if len(data.segments) != len(profiles):
            raise ResultInvalid(
                f"{len(data.segments)} renditions for a ladder of {len(profiles)} profiles"
            )
        for t in data.segments:
            if not same_origin(t.url, info.transcoder):
                # Renditions are fetched from the orchestrator only: a URL elsewhere (the
                # gateway's own network, say) is never requested.
                raise ResultInvalid("a rendition URL is not on the orchestrator's address")
        # Each rendition is downloaded and counted on its own thread (the socket and PyAV
        # release the GIL; only the header parsing of a count from packets holds it): the
        # check takes about as long as the largest rendition, not their sum.
        fetched = list(
            self._workers().map(
                lambda t: self._fetch_and_count(t.url, fmt, deadline), data.segments
            )
        )
        blobs = [blob for blob, _ in fetched]
        if self.broadcaster.on_chain:
            signer = bytes(info.address) or bytes(info.ticket_params.recipient)
            digest = keccak256(b"".join(keccak256(b) for b in blobs))
            try:
                ok = recover(digest, bytes(data.sig)) == signer
            except ValueError:
                ok = False
            if not ok:
                raise ResultInvalid("the result's signature is not the orchestrator's")
        out = []
        for t, (blob, counted), profile in zip(data.segments, fetched, profiles, strict=True):
            width, height, frames, pixels = counted
            if pixels != t.pixels:
                raise ResultInvalid(f"{profile.name}: holds {pixels} pixels, {t.pixels} claimed")
            out.append(
                NetworkRendition(profile.name, t.url, fmt, width, height, frames, pixels, blob)
            )
        return tuple(out)

    def _fetch_and_count(self, url: str, fmt: str, deadline: float) -> tuple[bytes, PixelCount]:
        blob = self._download(url, deadline)
        return blob, counted_pixels(blob, fmt)

    def _workers(self) -> ThreadPoolExecutor:
        """Threads for a result's renditions (built on first use)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(8, thread_name_prefix=f"lp-{self.name}"[:15])
            return self._pool

    def _download(self, url: str, deadline: float) -> bytes:
        """GET a rendition (at most 4 s, as go-livepeer); a GET that the connection dropped is
        tried once more on a new one."""
        for last in (False, True):
            try:
                return self._get(url, deadline)
            except httpx.TransportError as e:
                log.warning("orchestrator %s: downloading %s: %r", self.name, url, e)
                self.reset()
                if last or time.monotonic() >= deadline:
                    raise OrchestratorUnreachable(
                        f"rendition download: {e.__class__.__name__}"
                    ) from e
            except httpx.HTTPError as e:
                raise OrchestratorUnreachable(f"rendition download: {e.__class__.__name__}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self, url: str, deadline: float) -> bytes:
        # go-livepeer gives a download 4 s in all, within the segment's deadline.
        deadline = min(deadline, time.monotonic() + 4.0)
        with self.uploads().stream("GET", url, timeout=max(0.1, deadline - time.monotonic())) as r:
            if r.status_code != 200:
                raise OrchestratorRefused(f"rendition download: HTTP {r.status_code}")
            return read_body(r, MAX_RENDITION_BYTES, deadline, "rendition download")

    def close(self) -> None:
        with self._lock:
            streams = list(self._sessions)
        for stream in streams:
            self.end(stream)
        self.reset()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def read_body(
    r: httpx.Response, cap: int, deadline: float, what: str, *, truncate: bool = False
) -> bytes:
    """``r``'s body as it streams in, at most ``cap`` bytes (ResultInvalid past it, or the
    first ``cap`` with ``truncate``) and done by ``deadline`` (OrchestratorUnreachable past
    it): an orchestrator that sends without end cannot fill the gateway's memory, nor one
    that trickles its answer, a byte at a time, hold it past the segment's deadline (the
    client's timeouts count each read, not the whole)."""
    body = bytearray()
    for chunk in r.iter_bytes():
        body += chunk
        if len(body) > cap:
            if truncate:
                return bytes(body[:cap])
            raise ResultInvalid(f"{what}: the answer exceeds {cap} bytes")
        if time.monotonic() > deadline:
            raise OrchestratorUnreachable(f"{what}: the answer took past the deadline")
    return bytes(body)


def same_origin(url: str, base: str) -> bool:
    """Whether ``url`` is served from ``base``'s scheme, host and port."""
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base)
    try:
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port) and bool(a.hostname)
    except ValueError:  # a port that is not a number
        return False


def manifest_id(stream: str) -> str:
    """The manifest id a stream is sent under: opaque, so the orchestrator learns nothing of
    the gateway's API keys, and within every orchestrator's accepted characters."""
    return hashlib.sha256(stream.encode()).hexdigest()[:32]


def counted_pixels(blob: bytes, fmt: str) -> PixelCount:
    """(width, height, frames, Σ width x height) of a rendition's video frames as a decoder
    outputs them (from its packets where that is sure, farm.media.pixels); ResultInvalid
    when it does not decode."""
    try:
        return rendition_pixels(blob, fmt)
    except (InputInvalid, InputCorrupt) as e:
        raise ResultInvalid(str(e)) from e


def _bits(capability: int) -> list[int]:
    """go-livepeer's capability bitstring with one capability set: 64 per word."""
    words = [0] * (capability // 64 + 1)
    words[capability // 64] |= 1 << (capability % 64)
    return words


def _any_certificate() -> ssl.SSLContext:
    """go-livepeer's gateway trusts whatever certificate an orchestrator shows."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
