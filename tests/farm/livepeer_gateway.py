"""A gateway that speaks only go-livepeer's wire format, for the orchestrator's tests.

It does what go-livepeer's ``-gateway`` does against an orchestrator (docs/orchestrator.md):
GetOrchestrator over gRPC with TLS and ALPN h2 (grpcio, which refuses a server that does not
negotiate h2), then ``POST <transcoder>/segment`` with a signed ``SegData`` in
``Livepeer-Segment`` and a ``net.Payment`` in ``Livepeer-Payment``, keeping its own balance
with the orchestrator as go-livepeer's does, then GETs every rendition URL. Messages are built
from the project's own .proto files; nothing of the node's code is used.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import grpc
import httpx
from eth_utils.address import to_checksum_address

from chain import pm_pb2
from chain.payment import params_from_net, price_from_net
from chain.sender import FEE_MARGIN, TicketSender, fee_pixels, tickets_needed
from chain.signing import keccak256
from farm.golivepeer import net_pb2
from farm.golivepeer.wire import capability_words, seg_data_profiles
from farm.media.profiles import VideoProfile


def flatten(manifest_id: bytes, seq: int, data_hash: bytes, names: list[str]) -> bytes:
    """SegData's signed bytes, written here from the protocol's description."""
    tail = "".join(keccak256(n.encode())[:4].hex() for n in names).encode()
    return manifest_id + seq.to_bytes(32, "big") + data_hash + tail


@dataclass
class Session:
    """What the gateway keeps per orchestrator session: its info and its balance there."""

    info: net_pb2.OrchestratorInfo
    balance: Fraction = Fraction(0)
    nonce: int = 0
    sent: list[int] = field(default_factory=list)


class LivepeerGateway:
    """go-livepeer's gateway side against one orchestrator at ``url`` (https://host:port)."""

    def __init__(self, url: str, cert: Path | None, key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.sender = TicketSender(key) if key else None
        host = self.url.split("://", 1)[1]
        if cert is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
            self.channel = grpc.secure_channel(host, creds)
        else:
            self.channel = grpc.insecure_channel(host)
        self.http = httpx.Client(verify=False, timeout=60)

    @property
    def address(self) -> bytes:
        return self.sender.address if self.sender else b"\x00" * 20

    def _unary(self, method: str, request: bytes) -> bytes:
        call = self.channel.unary_unary(
            f"/net.Orchestrator/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        return bytes(call(request, timeout=10))

    def orchestrator_request(self) -> net_pb2.OrchestratorRequest:
        request = net_pb2.OrchestratorRequest(address=self.address)
        if self.sender is not None:
            checksummed = to_checksum_address(self.address).encode()
            request.sig = self.sender.signer.sign_hash(keccak256(checksummed))
        return request

    def get_orchestrator(
        self, request: net_pb2.OrchestratorRequest | None = None
    ) -> net_pb2.OrchestratorInfo:
        raw = self._unary(
            "GetOrchestrator", (request or self.orchestrator_request()).SerializeToString()
        )
        return net_pb2.OrchestratorInfo.FromString(raw)

    def session(self) -> Session:
        return Session(self.get_orchestrator())

    def end(self, session: Session) -> None:
        request = net_pb2.EndTranscodingSessionRequest(auth_token=session.info.auth_token)
        self._unary("EndTranscodingSession", request.SerializeToString())

    def ping(self, value: bytes) -> bytes:
        return net_pb2.PingPong.FromString(
            self._unary("Ping", net_pb2.PingPong(value=value).SerializeToString())
        ).value

    def seg_data(
        self,
        session: Session,
        manifest: str,
        seq: int,
        data: bytes,
        profiles: list[VideoProfile],
        duration_ms: int,
        fmt: str = "mpegts",
    ) -> net_pb2.SegData:
        seg = net_pb2.SegData(
            manifestId=manifest.encode(),
            seq=seq,
            hash=keccak256(data),
            profiles=b"invalid",
            duration=duration_ms,
            auth_token=session.info.auth_token,
        )
        seg_data_profiles(seg, profiles, fmt)
        if self.sender is not None:
            message = flatten(seg.manifestId, seq, seg.hash, [p.name for p in profiles])
            seg.sig = self.sender.signer.sign_hash(keccak256(message))
        return seg

    def payment(self, session: Session, fee: Fraction) -> tuple[str, int]:
        """The Livepeer-Payment header for a segment costing ``fee``, with go-livepeer's
        ticket count; (header, tickets)."""
        info = session.info
        if self.sender is None or not info.HasField("ticket_params"):
            return "", 0
        price = price_from_net(info.price_info)
        params = params_from_net(info.ticket_params, price)
        ev = params.ticket(self.address, 0).expected_value()
        count = tickets_needed(session.balance, max(fee, ev), ev)
        message = pm_pb2.Payment(sender=self.address)
        message.expected_price.CopyFrom(info.price_info)
        message.ticket_params.CopyFrom(info.ticket_params)
        message.expiration_params.CopyFrom(info.ticket_params.expiration_params)
        for _ in range(count):
            session.nonce += 1
            ticket = params.ticket(self.address, session.nonce)
            message.ticket_sender_params.append(
                pm_pb2.TicketSenderParams(
                    sender_nonce=session.nonce, sig=self.sender.signer.sign_hash(ticket.hash())
                )
            )
        session.balance += count * ev
        session.sent.append(count)
        return base64.b64encode(message.SerializeToString()).decode(), count

    def post_segment(
        self,
        session: Session,
        seg: net_pb2.SegData,
        body: bytes,
        *,
        payment: str | None = None,
        content_type: str = "video/MP2T",
    ) -> httpx.Response:
        headers = {
            "Livepeer-Segment": base64.b64encode(seg.SerializeToString()).decode(),
            "Content-Type": content_type,
        }
        if payment is not None:
            headers["Livepeer-Payment"] = payment
        return self.http.post(f"{session.info.transcoder}/segment", content=body, headers=headers)

    def transcode(
        self,
        session: Session,
        manifest: str,
        seq: int,
        data: bytes,
        profiles: list[VideoProfile],
        duration_ms: int,
        *,
        by_url: str | None = None,
    ) -> tuple[net_pb2.TranscodeResult, list[bytes]]:
        """One segment as go-livepeer's gateway sends it: (the result, the renditions)."""
        seg = self.seg_data(session, manifest, seq, data, profiles, duration_ms)
        price = price_from_net(session.info.price_info)
        pixels = fee_pixels(
            ((p.width, p.height, Fraction(p.fps, p.fps_den)) for p in profiles),
            (duration_ms or 2000) / 1000,
        )
        header, _ = self.payment(session, pixels * FEE_MARGIN * price)
        body = by_url.encode() if by_url else data
        kind = "application/vnd+livepeer.uri" if by_url else "video/MP2T"
        r = self.post_segment(session, seg, body, payment=header, content_type=kind)
        assert r.status_code == 200, f"{r.status_code}: {r.text}"
        result = net_pb2.TranscodeResult.FromString(r.content)
        renditions = []
        if result.WhichOneof("result") == "data":
            session.balance -= price * sum(s.pixels for s in result.data.segments)
            for s in result.data.segments:
                got = self.http.get(s.url)
                assert got.status_code == 200, f"{s.url}: {got.status_code}"
                renditions.append(got.content)
        if result.HasField("info"):
            # go-livepeer adopts the refreshed params and starts their nonces again.
            session.info = result.info
            session.nonce = 0
        return result, renditions

    # -- AI ---------------------------------------------------------------------------------

    def ai_session(self, capability: int, model: str) -> Session:
        """GetOrchestrator asking for one AI model, as go-livepeer's AI gateway does: the price
        it is quoted (and its ticket params) are that model's."""
        request = self.orchestrator_request()
        request.capabilities.bitstring.extend(capability_words([capability]))
        request.capabilities.constraints.PerCapability[capability].models[model].warm = True
        return Session(self.get_orchestrator(request))

    def ai_seg_data(self, session: Session, capability: int, model: str) -> net_pb2.SegData:
        """The SegData of an AI request: manifest ``<capability>_<model>``, seq 0, the hash
        of nothing, no profiles."""
        seg = net_pb2.SegData(
            manifestId=f"{capability}_{model}".encode(),
            seq=0,
            hash=keccak256(b""),
            auth_token=session.info.auth_token,
        )
        if self.sender is not None:
            message = flatten(seg.manifestId, 0, seg.hash, [])
            seg.sig = self.sender.signer.sign_hash(keccak256(message))
        return seg

    def ai(
        self,
        session: Session,
        pipeline: str,
        capability: int,
        model: str,
        units: int,
        *,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        fields: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        worker_protocol: bool = True,
        seg: net_pb2.SegData | None = None,
        payment: str | None = None,
    ) -> httpx.Response:
        """One AI request as go-livepeer's gateway sends it, paying for ``units`` at the
        price it was quoted."""
        seg = seg if seg is not None else self.ai_seg_data(session, capability, model)
        fee = units * price_from_net(session.info.price_info)
        if payment is None:
            payment, _ = self.payment(session, fee)
        headers = {
            "Livepeer-Segment": base64.b64encode(seg.SerializeToString()).decode(),
            "Livepeer-Payment": payment,
        }
        if worker_protocol:
            headers["Authorization"] = "Livepeer-AI-Worker-1.0"
        url = f"{session.info.transcoder}/{pipeline}"
        if body is not None:
            r = self.http.post(url, json=body, headers=headers)
        else:
            r = self.http.post(url, data=fields or {}, files=files or {}, headers=headers)
        if r.status_code == 200:
            session.balance -= fee
        return r

    def close(self) -> None:
        self.channel.close()
        self.http.close()
