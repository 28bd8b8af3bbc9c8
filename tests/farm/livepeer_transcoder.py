"""A transcoder that behaves as go-livepeer's standalone transcoder does (``livepeer -transcoder``).

It registers over gRPC (TLS, the orchestrator's certificate taken as it comes, as go-livepeer
skips verification), receives ``NotifySegment`` messages, downloads each ``url`` over HTTPS
without verification, transcodes with the project's engine to the profiles in
``segData.fullProfiles*``, and posts the renditions as ``multipart/mixed`` to
``/transcodeResults`` with go-livepeer's headers. Each notify runs on its own thread.
"""

from __future__ import annotations

import secrets
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import httpx

from farm.golivepeer import net_pb2
from farm.golivepeer.wire import DEFAULT_CAPABILITIES, capability_words, from_net_profiles
from farm.media.engine import EngineOptions, transcode
from farm.media.output import MIME_TYPES

METHOD = "/net.Transcoder/RegisterTranscoder"


def multipart(parts: list[tuple[str, bytes, int]]) -> tuple[bytes, str]:
    """A body as Go's multipart.Writer writes it, and its boundary."""
    boundary = secrets.token_hex(16)
    body = bytearray()
    for i, (ctype, data, pixels) in enumerate(parts):
        body += (b"\r\n" if i else b"") + f"--{boundary}\r\n".encode()
        body += f"Content-Type: {ctype}\r\nContent-Length: {len(data)}\r\n".encode()
        body += f"Pixels: {pixels}\r\n\r\n".encode() + data
    body += f"\r\n--{boundary}--\r\n".encode()
    return bytes(body), boundary


@dataclass
class LivepeerTranscoder:
    """One registration of a go-livepeer-like transcoder with an orchestrator."""

    orch_addr: str
    secret: str
    capacity: int = 1
    capabilities: tuple[int, ...] | None = DEFAULT_CAPABILITIES
    #: Called with each task's NotifySegment before it is transcoded; returning False skips
    #: the transcode and the upload (a transcoder that stalls or is about to disappear).
    on_notify: Callable[[net_pb2.NotifySegment], bool] | None = None
    #: Post this text as a ``livepeer/transcoding-error`` instead of renditions.
    fail_with: str | None = None
    #: Added to each rendition's reported Pixels (a transcoder that overstates its work).
    pixels_offset: int = 0
    notified: list[net_pb2.NotifySegment] = field(default_factory=list)
    teardowns: list[str] = field(default_factory=list)
    posted: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        host, port = self.orch_addr.rsplit(":", 1)
        pem = ssl.get_server_certificate((host, int(port)))
        self.channel = grpc.secure_channel(
            self.orch_addr, grpc.ssl_channel_credentials(root_certificates=pem.encode())
        )
        self._register = self.channel.unary_stream(
            METHOD,
            request_serializer=net_pb2.RegisterRequest.SerializeToString,
            response_deserializer=net_pb2.NotifySegment.FromString,
        )
        self.http = httpx.Client(verify=False, timeout=30)
        self.call: grpc.CallIterator | None = None
        self._thread: threading.Thread | None = None
        self.ended: BaseException | None = None

    def request(self) -> net_pb2.RegisterRequest:
        req = net_pb2.RegisterRequest(secret=self.secret, capacity=self.capacity)
        if self.capabilities is not None:
            req.capabilities.bitstring.extend(capability_words(self.capabilities))
        return req

    def register_only(self) -> grpc.RpcError:
        """Register and return the error the stream ends with (for refusals)."""
        try:
            for _ in self._register(self.request(), timeout=10):
                pass
        except grpc.RpcError as e:
            return e
        raise AssertionError("the stream ended without an error")

    def start(self) -> None:
        """Register and serve notifies on a thread until the stream ends or close()."""
        self.call = self._register(self.request())
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self.call is not None
        try:
            for notify in self.call:
                if not notify.url:
                    self.teardowns.append(notify.segData.auth_token.session_id)
                    continue
                self.notified.append(notify)
                threading.Thread(target=self._task, args=(notify,), daemon=True).start()
        except grpc.RpcError as e:
            self.ended = e

    def _task(self, notify: net_pb2.NotifySegment) -> None:
        try:
            if self.on_notify is not None and not self.on_notify(notify):
                return
            segment = self.http.get(notify.url)
            segment.raise_for_status()
            headers = {
                "Authorization": "Livepeer-Transcoder-1.0",
                "Credentials": self.secret,
                "TaskId": str(notify.taskId),
            }
            if self.fail_with is not None:
                headers |= {"Content-Type": "livepeer/transcoding-error", "Pixels": "0"}
                body = self.fail_with.encode()
            else:
                profiles, fmt = from_net_profiles(notify.segData)
                result = transcode(segment.content, profiles, EngineOptions(fmt=fmt))
                parts = [
                    (MIME_TYPES[fmt], r.data, r.pixels + self.pixels_offset)
                    for r in result.renditions
                ]
                body, boundary = multipart(parts)
                headers |= {
                    "Content-Type": f"multipart/mixed; boundary={boundary}",
                    "Pixels": str(result.decoded_pixels),
                }
            base = notify.url.split("/golivepeer/")[0]
            answer = self.http.post(f"{base}/transcodeResults", content=body, headers=headers)
            answer.raise_for_status()
            self.posted.append(notify.taskId)
        except Exception as e:
            self.errors.append(e)

    def close(self) -> None:
        """Disconnect, as a transcoder that is stopped or loses its network does."""
        if self.call is not None:
            self.call.cancel()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.channel.close()
        self.http.close()
