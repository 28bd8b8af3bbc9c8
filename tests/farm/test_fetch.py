"""URLs fetched for callers reach public addresses only, on every hop, with one error text."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from farm.errors import FetchFailed
from farm.fetch import GENERIC, FetchPolicy, SafeFetcher, is_public
from farm.settings import WorkerSettings
from tests.farm.harness import free_port


class Server:
    """An HTTP server on every IPv4 interface that records the paths it was asked for."""

    def __init__(self, route: Callable[[str], tuple[int, dict[str, str], bytes]]) -> None:
        self.hits: list[str] = []
        hits, answer = self.hits, route

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                status, headers, body = answer(self.path)
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    def route(path: str) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/to/"):  # /to/<url>: a redirect there
            return 302, {"Location": path[4:]}, b""
        if path == "/loop":
            return 302, {"Location": "/loop"}, b""
        return 200, {"Content-Type": "video/mp4"}, b"media:" + path.encode()

    s = Server(route)
    yield s
    s.close()


def read(fetcher: SafeFetcher, url: str) -> bytes:
    with fetcher.stream(url) as response:
        return response.read()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.9.9.9",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::1",  # 6to4 around 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 around 10.0.0.1
        "2001:db8::1",
    ],
)
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_internal_destinations_are_refused_before_connecting(server: Server) -> None:
    fetcher = SafeFetcher(FetchPolicy())
    port = server.port
    urls = [
        f"http://127.0.0.1:{port}/a",
        f"http://127.0.0.2:{port}/a",
        f"http://localhost:{port}/a",
        f"http://2130706433:{port}/a",  # 127.0.0.1 as one decimal number
        f"http://0x7f000001:{port}/a",
        f"http://0.0.0.0:{port}/a",
        f"http://0:{port}/a",
        f"http://[::1]:{port}/a",
        f"http://[::ffff:127.0.0.1]:{port}/a",
        "http://169.254.169.254/latest/meta-data/",
        "ftp://example.com/a",
        "file:///etc/passwd",
        "http://[::1/a",
        "http://a\x00b/",
    ]
    for url in urls:
        with pytest.raises(FetchFailed) as e:
            read(fetcher, url)
        assert str(e.value) == GENERIC, url
    assert server.hits == []
    fetcher.close()


def test_an_open_and_a_closed_port_fail_alike() -> None:
    # Allowed on loopback, so that the connection is really tried: the caller still cannot
    # tell a listening port from a closed one.
    fetcher = SafeFetcher(FetchPolicy.parse(["127.0.0.0/8"]), timeout=5.0)
    with pytest.raises(FetchFailed) as closed:
        read(fetcher, f"http://127.0.0.1:{free_port()}/")
    assert str(closed.value) == GENERIC
    fetcher.close()


def test_the_allow_list_covers_the_operators_storage_and_redirects_are_checked(
    server: Server,
) -> None:
    base = f"http://127.0.0.1:{server.port}"
    allowed = SafeFetcher(FetchPolicy.parse(["127.0.0.1/32"]))
    assert read(allowed, f"{base}/clip.mp4") == b"media:/clip.mp4"
    # Redirects are followed hop by hop, each hop checked: one to an address the list does
    # not cover is refused without being requested.
    assert read(allowed, f"{base}/to//clip.mp4") == b"media:/clip.mp4"
    with pytest.raises(FetchFailed, match=f"^{GENERIC}$"):
        read(allowed, f"{base}/to/http://127.0.0.2:{server.port}/secret")
    with pytest.raises(FetchFailed, match=f"^{GENERIC}$"):
        read(allowed, f"{base}/to/http://169.254.169.254/latest/meta-data/")
    assert "/secret" not in server.hits
    with pytest.raises(FetchFailed, match=f"^{GENERIC}$"):
        read(allowed, f"{base}/loop")
    assert server.hits.count("/loop") == 6  # the first request and five redirects
    allowed.close()
    # A host name on the list is allowed whatever it resolves to; the addresses it redirects
    # to are not.
    by_name = SafeFetcher(FetchPolicy.parse(["localhost"]))
    local = f"http://localhost:{server.port}"
    assert read(by_name, f"{local}/x") == b"media:/x"
    with pytest.raises(FetchFailed):
        read(by_name, f"{local}/to/http://127.0.0.1:{server.port}/secret")
    assert "/secret" not in server.hits
    by_name.close()


def test_the_setting_is_parsed_and_checked() -> None:
    policy = WorkerSettings(fetch_allow="10.0.0.0/8, fd00::/8,storage.internal").fetch_policy()
    assert policy.allows(ipaddress.ip_address("10.2.3.4"), "x")
    assert policy.allows(ipaddress.ip_address("::ffff:10.2.3.4"), "x")
    assert policy.allows(ipaddress.ip_address("fd00::5"), "x")
    assert policy.allows(ipaddress.ip_address("127.0.0.1"), "storage.internal")
    assert not policy.allows(ipaddress.ip_address("192.168.0.1"), "x")
    with pytest.raises(ValueError, match="not a network or a host name"):
        WorkerSettings(fetch_allow="10.0.0.0/33")
