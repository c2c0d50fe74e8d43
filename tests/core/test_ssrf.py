"""The outbound-URL guard (SSRF): classification, URL checks, allowlist, pinned transport.

Only 127.0.0.1 is ever contacted: public-looking names go through fake resolvers and are
never connected to (those tests stop at ``resolve_and_check``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fangwire.security.ssrf import (
    BlockedURL,
    GuardedClient,
    OutboundPolicy,
    ResolutionFailed,
    ResponseTooLarge,
    classify_address,
    fetch_limited,
    guarded_client,
    resolve_and_check,
    state,
)

LIMIT = 5.0  # seconds; every async test runs under this deadline


class FakeResolver:
    """Maps names to address lists; unknown names fail like getaddrinfo. Records calls."""

    def __init__(self, table: dict[str, Sequence[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        try:
            return list(self.table[host])
        except KeyError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None


async def never_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolver must not be called (host {host!r})")


PUBLIC = FakeResolver(
    {
        "example.com": ["93.184.216.34", "2606:2800:220:1::1"],
        "add.bad": ["93.184.216.34"],
        "xn--bcher-kva.example": ["93.184.216.34"],
        "mixed.example": ["93.184.216.34", "10.0.0.7"],
        "mixed6.example": ["2606:2800:220:1::1", "fd12:3456::1"],
        "rebind.example": ["127.0.0.1"],
        "meta.example": ["169.254.169.254"],
        "peer.lan": ["192.168.1.5"],
        "ten.example": ["10.1.2.3"],
        "garbage.example": ["not-an-ip"],
        "empty.example": [],
    }
)


# --------------------------------------------------------------------------- classification

FORBIDDEN: list[tuple[str, str]] = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "RFC 1918"),
    ("172.16.0.1", "RFC 1918"),
    ("172.31.255.255", "RFC 1918"),
    ("192.168.0.10", "RFC 1918"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to classify
    ("::", "unspecified"),
    ("0.1.2.3", "0.0.0.0/8"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("169.254.169.254", "metadata"),
    ("fd00:ec2::254", "metadata"),
    ("100.100.100.200", "metadata"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("2001:db8::1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("fec0::1", "site-local"),
    ("192.0.0.8", "IETF protocol"),
    # IPv6 forms embedding a forbidden IPv4 address
    ("::ffff:127.0.0.1", "IPv4-mapped IPv6 embedding 127.0.0.1: loopback"),
    ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:10.0.0.1", "IPv4-mapped IPv6 embedding 10.0.0.1"),
    ("::127.0.0.1", "IPv4-compatible IPv6 embedding 127.0.0.1"),
    ("::ffff:0:127.0.0.1", "IPv4-translated IPv6 embedding 127.0.0.1"),
    ("64:ff9b::7f00:1", "NAT64 (64:ff9b::/96) embedding 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64 (64:ff9b::/96) embedding 169.254.169.254: cloud metadata"),
    ("64:ff9b::c0a8:1", "NAT64 (64:ff9b::/96) embedding 192.168.0.1"),
    ("64:ff9b:1::7f00:1", "local-use NAT64"),
    ("64:ff9b:1::5db8:d822", "local-use NAT64"),
    ("2002:7f00:1::1", "6to4 (2002::/16) embedding 127.0.0.1: loopback"),
    ("2002:a9fe:a9fe::1", "6to4 (2002::/16) embedding 169.254.169.254: cloud metadata"),
    ("2002:c0a8:101::1", "6to4 (2002::/16) embedding 192.168.1.1"),
    # Teredo: server 127.0.0.1; client obfuscated (XOR) 93.184.216.34
    ("2001:0:7f00:1::a247:27dd", "Teredo (2001::/32) embedding 127.0.0.1: loopback"),
    # Teredo: server 65.54.227.120 (public), client 10.0.0.1 obfuscated -> f5ff:fffe
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo (2001::/32) embedding 10.0.0.1"),
    # Teredo around public addresses only: still not globally reachable
    ("2001:0:4136:e378:8000:63bf:a247:27dd", "Teredo"),
]


@pytest.mark.parametrize(("address", "expected"), FORBIDDEN)
def test_forbidden_addresses(address: str, expected: str) -> None:
    reason = classify_address(ipaddress.ip_address(address))
    assert reason is not None, address
    assert expected in reason, (address, reason)


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "2606:2800:220:1::1",
        "2a00:1450:4001:80b::200e",
        "::ffff:93.184.216.34",  # mapped public v4
        "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34
        "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
    ],
)
def test_public_addresses_allowed(address: str) -> None:
    assert classify_address(ipaddress.ip_address(address)) is None


# --------------------------------------------------------------------------- resolve_and_check


@pytest.mark.anyio
@pytest.mark.parametrize("host", ["example.com", "add.bad"])
async def test_public_name_resolves_to_pinned_target(host: str) -> None:
    with anyio.fail_after(LIMIT):
        target = await resolve_and_check(f"https://{host}/a?b=1", OutboundPolicy(), resolver=PUBLIC)
    assert target.host == host
    assert target.port == 443
    assert target.ip == ipaddress.ip_address("93.184.216.34")
    assert target.url == f"https://{host}/a?b=1"


@pytest.mark.anyio
async def test_all_addresses_returned_in_order() -> None:
    with anyio.fail_after(LIMIT):
        target = await resolve_and_check(
            "http://example.com:8080/", OutboundPolicy(), resolver=PUBLIC
        )
    assert target.port == 8080
    assert [str(a) for a in target.addresses] == ["93.184.216.34", "2606:2800:220:1::1"]


@pytest.mark.anyio
async def test_public_ip_literals_allowed_without_resolving() -> None:
    with anyio.fail_after(LIMIT):
        v4 = await resolve_and_check(
            "https://93.184.216.34/", OutboundPolicy(), resolver=never_resolve
        )
        v6 = await resolve_and_check(
            "https://[2606:2800:220:1::1]:8443/", OutboundPolicy(), resolver=never_resolve
        )
    assert str(v4.ip) == "93.184.216.34"
    assert str(v6.ip) == "2606:2800:220:1::1"
    assert v6.port == 8443


@pytest.mark.anyio
async def test_idna_names_are_encoded_before_resolution() -> None:
    resolver = FakeResolver(PUBLIC.table)
    with anyio.fail_after(LIMIT):
        target = await resolve_and_check(
            "https://Bücher.example/", OutboundPolicy(), resolver=resolver
        )
    assert resolver.calls == [("xn--bcher-kva.example", 443)]
    assert target.host == "xn--bcher-kva.example"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # decimal 127.0.0.1
        "http://017700000001/",  # octal
        "http://0177.0.0.1/",  # octal octet
        "http://0x7f.1/",  # hex + short form
        "http://0x7f000001/",  # hex
        "http://0x7F.0.0.1/",  # mixed hex/decimal
        "http://127.1/",  # short form
        "http://127.0.1/",
        "http://127.000.000.001/",
        "http://127.0.0.1./",  # trailing dot
        "http://0/",  # 0.0.0.0
        "http://1572395042/",  # decimal of a *public* address: still refused
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::1]/",
        "http://[fe80::1%25eth0]/",
        "http://127.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
    ],
)
async def test_odd_and_forbidden_literals_blocked_without_resolving(url: str) -> None:
    with anyio.fail_after(LIMIT), pytest.raises(BlockedURL) as info:
        await resolve_and_check(url, OutboundPolicy(), resolver=never_resolve)
    assert not isinstance(info.value, ResolutionFailed)
    assert info.value.reason


@pytest.mark.anyio
async def test_odd_literal_reason_names_decoded_address() -> None:
    with anyio.fail_after(LIMIT), pytest.raises(BlockedURL) as info:
        await resolve_and_check("http://0x7f.1/", OutboundPolicy(), resolver=never_resolve)
    assert "non-canonical" in info.value.reason
    assert "127.0.0.1" in info.value.reason


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("host", "bad_ip"),
    [
        ("mixed.example", "10.0.0.7"),
        ("mixed6.example", "fd12:3456::1"),
        ("rebind.example", "127.0.0.1"),
        ("meta.example", "169.254.169.254"),
    ],
)
async def test_any_forbidden_resolved_address_blocks(host: str, bad_ip: str) -> None:
    with anyio.fail_after(LIMIT), pytest.raises(BlockedURL) as info:
        await resolve_and_check(f"https://{host}/", OutboundPolicy(), resolver=PUBLIC)
    assert host in info.value.reason
    assert bad_ip in info.value.reason
    assert info.value.host == host


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "https://user:hunter2@example.com/",
        "https://user@example.com/",
        "https://:hunter2@example.com/",
        "https://user:hunter2@127.0.0.1/",
    ],
)
async def test_credentials_in_url_blocked_and_not_echoed(url: str) -> None:
    with anyio.fail_after(LIMIT), pytest.raises(BlockedURL) as info:
        await resolve_and_check(url, OutboundPolicy(), resolver=PUBLIC)
    assert "credentials in URL" in info.value.reason
    assert "hunter2" not in info.value.reason
    assert "hunter2" not in str(info.value)


@pytest.mark.anyio
async def test_unparseable_url_reason_does_not_echo_credentials() -> None:
    with anyio.fail_after(LIMIT), pytest.raises(BlockedURL) as info:
        await resolve_and_check("https://u:hunter2@exa mple.com:99999/", OutboundPolicy())
    assert "hunter2" not in info.value.reason


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "policy", "fragment"),
    [
        ("ftp://example.com/", OutboundPolicy(), "scheme 'ftp'"),
        ("gopher://example.com:70/", OutboundPolicy(), "scheme 'gopher'"),
        ("http://example.com/", OutboundPolicy(allowed_schemes=("https",)), "scheme 'http'"),
        ("https://example.com:8443/", OutboundPolicy(allowed_ports=(443,)), "port 8443"),
        ("http://example.com/", OutboundPolicy(allowed_ports=(443,)), "port 80"),
        ("file:///etc/passwd", OutboundPolicy(), "no host"),
    ],
)
async def test_scheme_and_port_policy(url: str, policy: OutboundPolicy, fragment: str) -> None:
    with anyio.fail_after(LIMIT), pytest.raises(BlockedURL) as info:
        await resolve_and_check(url, policy, resolver=PUBLIC)
    assert fragment in info.value.reason


@pytest.mark.anyio
async def test_port_policy_allows_listed_ports() -> None:
    policy = OutboundPolicy(allowed_ports=(443, 8443), allowed_schemes=("HTTPS",))
    with anyio.fail_after(LIMIT):
        assert (
            await resolve_and_check("https://example.com/", policy, resolver=PUBLIC)
        ).port == 443
        target = await resolve_and_check("HTTPS://EXAMPLE.COM:8443/", policy, resolver=PUBLIC)
    assert target.port == 8443
    assert target.host == "example.com"


@pytest.mark.anyio
async def test_resolution_failures() -> None:
    async def slow(host: str, port: int) -> list[str]:
        await anyio.sleep(30)
        raise AssertionError("unreachable")

    with anyio.fail_after(LIMIT):
        with pytest.raises(ResolutionFailed, match="does not resolve"):
            await resolve_and_check("https://nowhere.example/", OutboundPolicy(), resolver=PUBLIC)
        with pytest.raises(ResolutionFailed, match="no addresses"):
            await resolve_and_check("https://empty.example/", OutboundPolicy(), resolver=PUBLIC)
        with pytest.raises(ResolutionFailed, match="timed out"):
            await resolve_and_check(
                "https://slow.example/", OutboundPolicy(timeout_seconds=0.1), resolver=slow
            )
        with pytest.raises(BlockedURL, match="unparseable"):
            await resolve_and_check("https://garbage.example/", OutboundPolicy(), resolver=PUBLIC)


# --------------------------------------------------------------------------- allowlist


@pytest.mark.anyio
async def test_allowlist_rules() -> None:
    """IP/CIDR entries match resolved addresses; name entries trust the name, except metadata."""
    with anyio.fail_after(LIMIT):
        loop = OutboundPolicy(allow_hosts=("127.0.0.1",))
        target = await resolve_and_check("http://127.0.0.1:8080/", loop, resolver=never_resolve)
        assert str(target.ip) == "127.0.0.1"
        with pytest.raises(BlockedURL):  # only that address, not the whole of 127/8
            await resolve_and_check("http://127.0.0.2/", loop, resolver=never_resolve)
        # An allowlisted IP allows a name that resolves to it.
        assert (await resolve_and_check("http://rebind.example/", loop, resolver=PUBLIC)).ip

        cidr = OutboundPolicy(allow_hosts=("10.0.0.0/8",))
        assert str((await resolve_and_check("https://ten.example/", cidr, resolver=PUBLIC)).ip) == (
            "10.1.2.3"
        )
        with pytest.raises(BlockedURL, match=r"192\.168\.1\.5"):
            await resolve_and_check("https://peer.lan/", cidr, resolver=PUBLIC)

        names = OutboundPolicy(allow_hosts=("Peer.LAN", "rebind.example.", "meta.example"))
        assert str((await resolve_and_check("https://peer.lan/", names, resolver=PUBLIC)).ip) == (
            "192.168.1.5"
        )
        assert str(
            (await resolve_and_check("http://rebind.example/", names, resolver=PUBLIC)).ip
        ) == ("127.0.0.1")
        # Metadata needs an explicit IP entry even for an allowlisted name.
        with pytest.raises(BlockedURL, match="metadata"):
            await resolve_and_check("http://meta.example/", names, resolver=PUBLIC)
        meta = OutboundPolicy(allow_hosts=("169.254.169.254",))
        assert (await resolve_and_check("http://meta.example/", meta, resolver=PUBLIC)).ip
        # A name entry does not leak to other names or to IP literals.
        with pytest.raises(BlockedURL):
            await resolve_and_check("https://ten.example/", names, resolver=PUBLIC)
        with pytest.raises(BlockedURL):
            await resolve_and_check("https://192.168.1.5/", names, resolver=never_resolve)

    assert OutboundPolicy().allow_hosts == ()


@pytest.mark.anyio
async def test_dns_rebinding_name_blocked_without_allowlist() -> None:
    with anyio.fail_after(LIMIT), pytest.raises(BlockedURL, match=r"rebind\.example.*127\.0\.0\.1"):
        await resolve_and_check("https://rebind.example/", OutboundPolicy(), resolver=PUBLIC)


def test_policy_validation_and_state() -> None:
    with pytest.raises(ValueError):
        OutboundPolicy(max_response_bytes=0)
    with pytest.raises(ValueError):
        OutboundPolicy(timeout_seconds=0)
    assert OutboundPolicy().max_response_bytes == 1024 * 1024
    status, details = state(OutboundPolicy(allow_hosts=("127.0.0.1", "peer.lan")))
    assert status == "active"
    assert details["allowlisted_hosts"] == 2
    assert details["allowed_ports"] == "any"
    assert state()[1]["allowlisted_hosts"] == 0


# --------------------------------------------------------------------------- end to end

BIG = b"x" * 4096
BOMB = gzip.compress(b"\0" * 200_000)


class LocalServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 recording connections, requests and TLS SNI."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.sni: list[str | None] = []
        self.ssl_context = ssl_context
        if ssl_context is not None:
            ssl_context.sni_callback = self._on_sni
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _on_sni(self, _obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.sni.append(name)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in lines[1:] if line)
            }
            self.requests.append((method, path, headers))
            await self._respond(path, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, path: str, writer: asyncio.StreamWriter) -> None:
        def send(status: str, headers: dict[str, str], body: bytes = b"") -> None:
            lines = [f"HTTP/1.1 {status}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

        if path == "/":
            send("200 OK", {"Content-Length": "5", "Content-Type": "text/plain"}, b"hello")
        elif path == "/redirect":
            send(
                "302 Found",
                {"Location": "http://169.254.169.254/latest/meta-data/", "Content-Length": "0"},
            )
        elif path == "/big":
            send("200 OK", {"Content-Length": str(len(BIG))}, BIG)
        elif path == "/big-stream":  # close-delimited body, no Content-Length
            send("200 OK", {})
            for i in range(0, len(BIG), 512):
                writer.write(BIG[i : i + 512])
                await writer.drain()
        elif path == "/gzip":
            send("200 OK", {"Content-Encoding": "gzip", "Content-Length": str(len(BOMB))}, BOMB)
        elif path == "/slow":  # drips one byte at a time: per-phase timeouts never fire
            send("200 OK", {"Content-Length": "1000000"})
            for _ in range(1000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.05)
        else:
            send("404 Not Found", {"Content-Length": "0"})
        await writer.drain()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LocalServer]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with LocalServer().running() as srv:
        yield srv


LOOP = OutboundPolicy(allow_hosts=("127.0.0.1",))


@pytest.mark.anyio
async def test_e2e_allowlisted_loopback_fetch(server: LocalServer) -> None:
    with anyio.fail_after(LIMIT):
        async with guarded_client(LOOP) as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/")
            limited = await fetch_limited(client, "GET", f"http://127.0.0.1:{server.port}/")
    assert response.status_code == 200
    assert response.text == "hello"
    assert limited.content == b"hello"
    assert limited.status_code == 200
    assert limited.headers["content-type"] == "text/plain"
    assert server.requests[0][2]["host"] == f"127.0.0.1:{server.port}"


@pytest.mark.anyio
async def test_e2e_redirect_returned_unfollowed(server: LocalServer) -> None:
    with anyio.fail_after(LIMIT):
        async with guarded_client(LOOP) as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/redirect")
            limited = await fetch_limited(client, "GET", f"http://127.0.0.1:{server.port}/redirect")
            # Even a caller forcing redirects cannot escape: each hop is validated again.
            with pytest.raises(BlockedURL, match=r"169\.254\.169\.254"):
                await client.get(f"http://127.0.0.1:{server.port}/redirect", follow_redirects=True)
    assert response.status_code == 302
    assert response.headers["location"] == "http://169.254.169.254/latest/meta-data/"
    assert response.is_redirect
    assert limited.status_code == 302
    assert [r[1] for r in server.requests] == ["/redirect"] * 3


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/big", "/big-stream", "/gzip"])
@pytest.mark.parametrize("via", ["policy", "max_bytes"])
async def test_e2e_response_over_cap_refused(server: LocalServer, path: str, via: str) -> None:
    """The cap comes from the policy, or from ``max_bytes`` (which can only lower it)."""
    if via == "policy":
        policy, kwargs = OutboundPolicy(allow_hosts=("127.0.0.1",), max_response_bytes=1024), {}
    else:
        policy, kwargs = LOOP, {"max_bytes": 1024}
    url = f"http://127.0.0.1:{server.port}{path}"
    with anyio.fail_after(LIMIT):
        async with guarded_client(policy) as client:
            with pytest.raises(ResponseTooLarge) as info:
                await fetch_limited(client, "GET", url, **kwargs)
            if via == "max_bytes":  # the same body under the policy's own 1 MiB cap is fine
                ok = await fetch_limited(client, "GET", url)
                assert len(ok.content) in (len(BIG), 200_000)
    assert "1024" in info.value.reason
    assert "127.0.0.1" in info.value.reason


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/big", "/big-stream"])
async def test_e2e_plain_client_reads_are_capped_by_transport(
    server: LocalServer, path: str
) -> None:
    policy = OutboundPolicy(allow_hosts=("127.0.0.1",), max_response_bytes=1024)
    with anyio.fail_after(LIMIT):
        async with guarded_client(policy) as client:
            with pytest.raises(ResponseTooLarge):
                await client.get(f"http://127.0.0.1:{server.port}{path}")


@pytest.mark.anyio
async def test_e2e_gzip_under_cap_is_decoded(server: LocalServer) -> None:
    with anyio.fail_after(LIMIT):
        async with guarded_client(LOOP) as client:
            response = await fetch_limited(client, "GET", f"http://127.0.0.1:{server.port}/gzip")
    assert response.content == b"\0" * 200_000
    assert "content-encoding" not in response.headers


@pytest.mark.anyio
async def test_e2e_total_deadline(server: LocalServer) -> None:
    policy = OutboundPolicy(allow_hosts=("127.0.0.1",), timeout_seconds=0.5)
    with anyio.fail_after(LIMIT):
        async with guarded_client(policy) as client:
            with pytest.raises(httpx.ReadTimeout, match="total deadline"):
                await fetch_limited(client, "GET", f"http://127.0.0.1:{server.port}/slow")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("policy", "make_url", "resolver"),
    [
        (OutboundPolicy(), lambda port: f"http://127.0.0.1:{port}/", None),
        (OutboundPolicy(), lambda port: f"http://localhost:{port}/", None),  # system resolver
        (OutboundPolicy(), lambda port: f"http://2130706433:{port}/", None),
        (OutboundPolicy(), lambda port: f"http://rebind.example:{port}/", PUBLIC),
        (OutboundPolicy(), lambda port: f"http://[::ffff:127.0.0.1]:{port}/", None),
        (LOOP, lambda port: f"http://u:p@127.0.0.1:{port}/", None),
        (
            OutboundPolicy(allow_hosts=("127.0.0.1",), allowed_ports=(443,)),
            lambda port: f"http://127.0.0.1:{port}/",
            None,
        ),
    ],
)
async def test_e2e_blocked_before_any_connection(
    server: LocalServer,
    policy: OutboundPolicy,
    make_url: Callable[[int], str],
    resolver: FakeResolver | None,
) -> None:
    with anyio.fail_after(LIMIT):
        async with guarded_client(policy, resolver=resolver) as client:
            with pytest.raises(BlockedURL):
                await client.get(make_url(server.port))
            with pytest.raises(BlockedURL):
                await fetch_limited(client, "GET", make_url(server.port))
        await anyio.sleep(0.05)
    assert server.connections == 0


@pytest.mark.anyio
async def test_e2e_allowlisted_name_pins_ip_and_keeps_host_header(server: LocalServer) -> None:
    resolver = FakeResolver({"svc.test": ["127.0.0.1"]})
    policy = OutboundPolicy(allow_hosts=("svc.test",))
    with anyio.fail_after(LIMIT):
        async with guarded_client(policy, resolver=resolver) as client:
            response = await client.get(f"http://svc.test:{server.port}/")
    assert response.text == "hello"
    assert str(response.request.url) == f"http://svc.test:{server.port}/"
    assert server.requests[0][2]["host"] == f"svc.test:{server.port}"
    assert resolver.calls == [("svc.test", server.port)]


@pytest.mark.anyio
async def test_e2e_falls_back_to_next_validated_address(server: LocalServer) -> None:
    # 127.0.0.2 refuses the connection (the server listens on 127.0.0.1 only).
    resolver = FakeResolver({"two.test": ["127.0.0.2", "127.0.0.1"]})
    policy = OutboundPolicy(allow_hosts=("127.0.0.0/8",))
    with anyio.fail_after(LIMIT):
        async with guarded_client(policy, resolver=resolver) as client:
            response = await client.get(f"http://two.test:{server.port}/")
    assert response.text == "hello"
    assert server.connections == 1


def _make_tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A private CA and a server certificate for ``secure.test`` only."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fangwire test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secure.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("secure.test")]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file = tmp_path / "server.pem"
    key_file = tmp_path / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(
        cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    )
    return server_ctx, client_ctx


@pytest.mark.anyio
async def test_e2e_tls_sni_and_certificate_checked_against_original_name(tmp_path: Path) -> None:
    server_ctx, client_ctx = _make_tls(tmp_path)
    resolver = FakeResolver({"secure.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    policy = OutboundPolicy(allow_hosts=("secure.test", "other.test"))
    with anyio.fail_after(LIMIT):
        async with LocalServer(server_ctx).running() as srv:
            async with guarded_client(policy, resolver=resolver, verify=client_ctx) as client:
                response = await client.get(f"https://secure.test:{srv.port}/")
                assert response.text == "hello"
                assert srv.sni == ["secure.test"]
                assert srv.requests[0][2]["host"] == f"secure.test:{srv.port}"
                # Same IP, different name: the certificate (for secure.test) must not verify.
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.get(f"https://other.test:{srv.port}/")
                assert srv.sni == ["secure.test", "other.test"]


@pytest.mark.anyio
async def test_guarded_client_configuration() -> None:
    with anyio.fail_after(LIMIT):
        async with guarded_client(OutboundPolicy(timeout_seconds=3)) as client:
            assert isinstance(client, GuardedClient)
            assert client.follow_redirects is False
            assert client.timeout.connect == 3
            assert client.trust_env is False
