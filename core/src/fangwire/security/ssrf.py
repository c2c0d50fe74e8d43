"""The shared outbound-URL guard: every fetch of a user-supplied URL goes through here.

Webhook targets, A2A agent cards, OIDC issuers and MCP HTTP servers are all URLs that an
operator, a peer or an LLM can influence. Fetching them naively is a server-side request
forgery (SSRF) hole: ``http://169.254.169.254/`` reads cloud credentials, ``http://127.0.0.1``
reaches the daemon's own admin API, and a name that resolves to a public address at check time
and to ``127.0.0.1`` at connect time (DNS rebinding) defeats check-then-fetch.

The rules (reference: reliability notes §2.5):

* Parse the URL once with httpx's parser (the same one that builds the request), refuse
  credentials in the URL, unknown schemes and ports outside the policy.
* Refuse numeric host spellings that libc would decode but that are not canonical dotted quads
  (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``): different parsers disagree about them.
* Resolve the host (A and AAAA), check **every** address with :func:`classify_address`, and
  refuse the URL if **any** address is forbidden and not allowlisted.
* Connect only to a validated address (:class:`PinnedTarget`), keeping the original ``Host``
  header and TLS SNI / certificate verification for the original host name. There is no second
  resolution, so there is no rebinding window.
* Never follow redirects (:func:`guarded_client`), cap the response size and the total time.

Allowlist rule (:attr:`OutboundPolicy.allow_hosts`): an entry is either an IP address / CIDR
or a host name. An IP/CIDR entry allows any resolved address inside it, whatever name led
there. A host-name entry (exact match, case-insensitive, no wildcards) means the operator
trusts that name: all its resolved addresses are accepted **except** cloud-metadata endpoints,
which need an explicit IP entry. A name that is not allowlisted but resolves to an allowlisted
IP is accepted too (the address is what matters).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
import attrs
import httpx

__all__ = [
    "BlockedURL",
    "GuardedClient",
    "GuardedTransport",
    "IPAddress",
    "OutboundPolicy",
    "PinnedTarget",
    "ResolutionFailed",
    "Resolver",
    "ResponseTooLarge",
    "classify_address",
    "fetch_limited",
    "guarded_client",
    "resolve_and_check",
    "state",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: ``async resolver(host, port) -> addresses``: every A/AAAA address of ``host`` as text.
#: ``host`` is already IDNA-encoded ASCII. Raise :class:`OSError` (e.g. ``socket.gaierror``)
#: when the name does not resolve.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

MIB = 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _positive_int(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _positive_float(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _lower_tuple(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(v.strip().lower() for v in values)


@attrs.frozen
class OutboundPolicy:
    """What outbound fetches of user-supplied URLs may do.

    * ``allow_hosts``: operator allowlist; IPs (``"127.0.0.1"``), CIDRs (``"10.0.0.0/8"``) or
      exact host names (``"peer.lan"``). See the module docstring for the matching rule.
    * ``allowed_schemes``: lower-case URL schemes; only ``http``/``https`` can actually be
      fetched.
    * ``allowed_ports``: ``None`` means any port; otherwise the effective port (explicit or the
      scheme default) must be listed.
    * ``max_response_bytes``: cap on the response body (both on the wire and decoded).
    * ``timeout_seconds``: per-phase httpx timeout, DNS resolution timeout, and the total
      deadline of :func:`fetch_limited`.
    """

    allow_hosts: tuple[str, ...] = attrs.field(default=(), converter=_lower_tuple)
    allowed_schemes: tuple[str, ...] = attrs.field(
        default=("https", "http"), converter=_lower_tuple
    )
    allowed_ports: tuple[int, ...] | None = None
    max_response_bytes: int = attrs.field(default=MIB, validator=_positive_int)
    timeout_seconds: float = attrs.field(default=10.0, validator=_positive_float)


class BlockedURL(Exception):
    """A URL (or its response) was refused by the guard.

    ``reason`` is safe to show to an operator: it names the host and why, and never contains
    credentials from the URL. ``host`` is the (IDNA-encoded) host name, or ``""`` if unknown.
    """

    def __init__(self, reason: str, *, host: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.host = host


class ResolutionFailed(BlockedURL):
    """The host name did not resolve (or resolution timed out). Possibly transient."""


class ResponseTooLarge(BlockedURL):
    """The response body exceeded :attr:`OutboundPolicy.max_response_bytes`."""


@attrs.frozen
class PinnedTarget:
    """A validated destination.

    ``url`` is the normalised URL (no credentials, IDNA host), ``host`` the IDNA-encoded host
    name (or the IP literal), ``port`` the effective port, ``ip`` the address to connect to and
    ``addresses`` every validated address (``ip`` first) for connection fallback.
    """

    url: str
    host: str
    port: int
    ip: IPAddress
    addresses: tuple[IPAddress, ...] = ()


# --------------------------------------------------------------------------- classification

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

_METADATA: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean ...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wireserver (public-looking!)
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS time sync over IPv6
    )
)

# Checked in order; the first match gives the reason.
_V4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/32"), "unspecified address"),
    (_V4("0.0.0.0/8"), "'this network' range (0.0.0.0/8)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("10.0.0.0/8"), "private (RFC 1918)"),
    (_V4("172.16.0.0/12"), "private (RFC 1918)"),
    (_V4("192.168.0.0/16"), "private (RFC 1918)"),
    (_V4("100.64.0.0/10"), "shared address space (CGNAT, 100.64.0.0/10)"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments (192.0.0.0/24)"),
    (_V4("192.0.2.0/24"), "documentation range"),
    (_V4("198.51.100.0/24"), "documentation range"),
    (_V4("203.0.113.0/24"), "documentation range"),
    (_V4("198.18.0.0/15"), "benchmarking (198.18.0.0/15)"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast (deprecated)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved (240.0.0.0/4)"),
)

_V6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified address"),
    (_V6("::1/128"), "loopback"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local (fec0::/10, deprecated)"),
    (_V6("fc00::/7"), "private (unique local, fc00::/7)"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("2001:db8::/32"), "documentation range"),
    (_V6("3fff::/20"), "documentation range"),
    (_V6("100::/64"), "discard-only (100::/64)"),
)

_MAPPED = _V6("::ffff:0:0/96")
_TRANSLATED = _V6("::ffff:0:0:0/96")  # SIIT "IPv4-translated"
_COMPATIBLE = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")
_NAT64_LOCAL = _V6("64:ff9b:1::/48")
_SIXTOFOUR = _V6("2002::/16")
_TEREDO = _V6("2001::/32")


def _low32(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, tuple[ipaddress.IPv4Address, ...]]:
    """IPv4 addresses embedded in a transition-mechanism IPv6 address, with its name."""
    if ip in _MAPPED:
        return "IPv4-mapped IPv6", (_low32(ip),)
    if ip in _TRANSLATED:
        return "IPv4-translated IPv6", (_low32(ip),)
    if ip in _COMPATIBLE:  # '::' and '::1' are matched by the plain rules first
        return "IPv4-compatible IPv6", (_low32(ip),)
    if ip in _NAT64:
        return "NAT64 (64:ff9b::/96)", (_low32(ip),)
    if ip in _SIXTOFOUR:
        return "6to4 (2002::/16)", (ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF),)
    if ip in _TEREDO:
        server = ipaddress.IPv4Address((int(ip) >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~int(ip) & 0xFFFFFFFF)
        return "Teredo (2001::/32)", (server, client)
    return "", ()


_METADATA_REASON = "cloud metadata endpoint"


def classify_address(ip: IPAddress) -> str | None:
    """Why connecting to ``ip`` is forbidden, or ``None`` if it is a public unicast address.

    Covers loopback, RFC 1918 / ULA, link-local, CGNAT, multicast, unspecified, broadcast and
    reserved space, cloud-metadata endpoints, documentation and benchmarking ranges, 0.0.0.0/8,
    site-local, and IPv6 transition forms whose embedded IPv4 address is forbidden
    (IPv4-mapped/-compatible/-translated, NAT64 ``64:ff9b::/96``, 6to4, Teredo server and
    client). The local-use NAT64 prefix ``64:ff9b:1::/48`` is always forbidden. Anything else
    that Python does not consider globally reachable is forbidden as a catch-all. Pure function.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        ip = ipaddress.IPv6Address(int(ip))
    if ip in _METADATA:
        return _METADATA_REASON
    if isinstance(ip, ipaddress.IPv4Address):
        for net4, reason in _V4_RULES:
            if ip in net4:
                return reason
    else:
        for net6, reason in _V6_RULES:
            if ip in net6:
                return reason
        if ip in _NAT64_LOCAL:
            return f"local-use NAT64 (64:ff9b:1::/48) embedding {_low32(ip)}"
        kind, embedded = _embedded_v4(ip)
        for v4 in embedded:
            inner = classify_address(v4)
            if inner is not None:
                return f"{kind} embedding {v4}: {inner}"
        if kind and ip in _TEREDO:
            return f"{kind}: IETF special-purpose, not globally reachable"
        if kind:
            return None  # transition form around a public IPv4 address
    if ip.is_multicast:
        return "multicast"
    if not ip.is_global:
        return "not globally reachable (special-purpose range)"
    return None


# --------------------------------------------------------------------------- allowlist


@functools.lru_cache(maxsize=64)
def _parse_allowlist(entries: tuple[str, ...]) -> tuple[tuple[IPNetwork, ...], frozenset[str]]:
    nets: list[IPNetwork] = []
    names: set[str] = set()
    for entry in entries:
        if not entry:
            continue
        try:
            nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            names.add(_normalise_name(entry))
    return tuple(nets), frozenset(names)


def _normalise_name(name: str) -> str:
    name = name.lower().rstrip(".")
    try:
        return httpx.URL(scheme="http", host=name).raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError):
        return name


def _in_networks(ip: IPAddress, nets: Sequence[IPNetwork]) -> bool:
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    return any(c.version == n.version and c in n for c in candidates for n in nets)


# --------------------------------------------------------------------------- resolution

# Characters libc's inet_aton accepts in numeric IPv4 forms (decimal, octal, hex, 1-4 parts).
_NUMERICISH = re.compile(r"^[0-9a-fx.]+$")


def _odd_ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """The address a non-canonical numeric host decodes to under libc rules, else ``None``."""
    if not _NUMERICISH.match(host) or not any(c.isdigit() for c in host):
        return None
    bare = host[:-1] if host.endswith(".") else host
    try:
        packed = socket.inet_aton(bare)
    except OSError:
        return None
    return ipaddress.IPv4Address(packed)


async def system_resolver(host: str, port: int) -> list[str]:
    """Default :data:`Resolver`: every A/AAAA address via ``anyio.getaddrinfo``, in order."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


def _parse_url(url: str | httpx.URL) -> httpx.URL:
    try:
        return url if isinstance(url, httpx.URL) else httpx.URL(url)
    except httpx.InvalidURL as exc:
        # httpx messages may quote the whole URL (credentials included): don't echo them.
        if str(exc).startswith("Invalid IPv4 address"):
            raise BlockedURL("invalid or non-canonical IPv4 literal in URL") from None
        raise BlockedURL("invalid URL (could not be parsed)") from None
    except (TypeError, ValueError):
        raise BlockedURL("invalid URL (could not be parsed)") from None


async def resolve_and_check(
    url: str | httpx.URL,
    policy: OutboundPolicy,
    *,
    resolver: Resolver | None = None,
) -> PinnedTarget:
    """Validate ``url`` against ``policy`` and return the address to connect to.

    Raises :class:`BlockedURL` if the URL has credentials, a scheme or port outside the policy,
    a non-canonical numeric host, or if **any** resolved address is forbidden by
    :func:`classify_address` and not allowlisted (module docstring). Raises
    :class:`ResolutionFailed` (a ``BlockedURL``) if the name does not resolve within
    ``policy.timeout_seconds``. ``resolver`` defaults to :func:`system_resolver`; it is only
    called for host names, never for IP literals. Never connects to the target.
    """
    u = _parse_url(url)
    host = u.raw_host.decode("ascii").lower()
    if not host:
        raise BlockedURL("URL has no host")
    if u.userinfo:
        raise BlockedURL(f"credentials in URL (host {host!r})", host=host)
    scheme = u.scheme.lower()
    if scheme not in policy.allowed_schemes:
        raise BlockedURL(f"scheme {scheme!r} not allowed (host {host!r})", host=host)
    port = u.port if u.port is not None else _DEFAULT_PORTS.get(scheme)
    if port is None:
        raise BlockedURL(f"no port for scheme {scheme!r} (host {host!r})", host=host)
    if policy.allowed_ports is not None and port not in policy.allowed_ports:
        raise BlockedURL(f"port {port} not allowed (host {host!r})", host=host)

    nets, names = _parse_allowlist(policy.allow_hosts)
    literal: IPAddress | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is None:
        odd = _odd_ipv4_literal(host)
        if odd is not None:
            raise BlockedURL(
                f"host {host!r} is a non-canonical IPv4 literal (decodes to {odd})", host=host
            )

    if literal is not None:
        addresses: list[IPAddress] = [literal]
        name_allowed = False
    else:
        name_allowed = host.rstrip(".") in names
        addresses = await _resolve(host, port, policy, resolver or system_resolver)

    for ip in addresses:
        if _in_networks(ip, nets):
            continue
        reason = classify_address(ip)
        if reason is not None and name_allowed and _METADATA_REASON not in reason:
            continue
        if reason is not None:
            where = f"host {host!r} is" if literal is not None else f"host {host!r} resolves to"
            raise BlockedURL(f"{where} {ip}: {reason}", host=host)

    clean = u.copy_with(username=None, password=None)
    return PinnedTarget(
        url=str(clean), host=host, port=port, ip=addresses[0], addresses=tuple(addresses)
    )


async def _resolve(
    host: str, port: int, policy: OutboundPolicy, resolver: Resolver
) -> list[IPAddress]:
    try:
        with anyio.fail_after(policy.timeout_seconds):
            raw = await resolver(host, port)
    except TimeoutError:
        raise ResolutionFailed(f"resolving host {host!r} timed out", host=host) from None
    except (OSError, UnicodeError) as exc:
        raise ResolutionFailed(f"host {host!r} does not resolve ({exc})", host=host) from None
    addresses: list[IPAddress] = []
    for text in raw:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise BlockedURL(
                f"host {host!r} resolved to an unparseable address", host=host
            ) from None
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise ResolutionFailed(f"host {host!r} has no addresses", host=host)
    return addresses


# --------------------------------------------------------------------------- transport


class _CappedStream(httpx.AsyncByteStream):
    """Passes the body through, raising :class:`ResponseTooLarge` past ``limit`` bytes."""

    def __init__(self, inner: httpx.AsyncByteStream, limit: int, host: str) -> None:
        self._inner = inner
        self._limit = limit
        self._host = host

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(
                    f"response from host {self._host!r} exceeds {self._limit} bytes",
                    host=self._host,
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _declared_length(headers: httpx.Headers) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that only connects to addresses :func:`resolve_and_check` approved.

    For each request: validate the URL, rewrite the request URL's host to the pinned IP, keep
    the original ``Host`` header, and set httpcore's ``sni_hostname`` extension to the original
    host so TLS SNI and certificate verification use the name, not the IP. If connecting to the
    first validated address fails, the other validated addresses are tried in order.

    Redirects: the transport returns 3xx responses as they are. :func:`guarded_client` sets
    ``follow_redirects=False``; if a caller enables redirect following anyway, every hop is a
    new request through this transport and is validated again (no bypass, but callers should
    treat 3xx as a failure, e.g. for webhooks).

    The response body is capped at ``policy.max_response_bytes`` on the wire (raising
    :class:`ResponseTooLarge` while streaming, or before reading if ``Content-Length`` already
    exceeds it). The inner transport defaults to an ``httpx.AsyncHTTPTransport`` with
    keep-alive disabled: pooling is keyed by IP, so a kept-alive TLS connection to one host
    name must not be reused for another name on the same IP. A custom ``inner`` transport is
    used as given (it must not use a proxy, which would resolve names itself).
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: Resolver | None = None,
        inner: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        self.policy = policy
        self._resolver = resolver
        self._inner = inner or httpx.AsyncHTTPTransport(
            verify=verify,
            limits=httpx.Limits(max_keepalive_connections=0),
            retries=0,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = await resolve_and_check(request.url, self.policy, resolver=self._resolver)
        headers = request.headers.copy()
        if "host" not in headers:
            headers["Host"] = request.url.netloc.decode("ascii")
        extensions = dict(request.extensions)
        if request.url.scheme == "https":
            extensions["sni_hostname"] = target.host.rstrip(".")
        failure: httpx.ConnectError | None = None
        for ip in target.addresses or (target.ip,):
            pinned = httpx.Request(
                request.method,
                request.url.copy_with(host=str(ip), username=None, password=None),
                headers=headers,
                stream=request.stream,
                extensions=extensions,
            )
            try:
                response = await self._inner.handle_async_request(pinned)
            except httpx.ConnectError as exc:
                failure = exc
                continue
            return await self._cap(request, response, target.host)
        assert failure is not None  # noqa: S101 - addresses is never empty
        raise failure

    async def _cap(
        self, request: httpx.Request, response: httpx.Response, host: str
    ) -> httpx.Response:
        limit = self.policy.max_response_bytes
        declared = _declared_length(response.headers)
        if request.method != "HEAD" and declared is not None and declared > limit:
            await response.aclose()
            raise ResponseTooLarge(
                f"response from host {host!r} declares {declared} bytes (limit {limit})",
                host=host,
            )
        stream = response.stream
        if not isinstance(stream, httpx.AsyncByteStream):  # pragma: no cover - async only
            return response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(stream, limit, host),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` on a :class:`GuardedTransport`; ``policy`` is kept for helpers."""

    def __init__(
        self, policy: OutboundPolicy, *, resolver: Resolver | None = None, verify: Any = True
    ) -> None:
        super().__init__(
            transport=GuardedTransport(policy, resolver=resolver, verify=verify),
            follow_redirects=False,
            timeout=httpx.Timeout(policy.timeout_seconds),
            trust_env=False,
        )
        self.policy = policy


def guarded_client(
    policy: OutboundPolicy, *, resolver: Resolver | None = None, verify: Any = True
) -> GuardedClient:
    """A client for user-supplied URLs: guarded transport, no redirects, policy timeouts.

    ``trust_env`` is off (no proxy or ``.netrc`` from the environment). ``verify`` is passed to
    the inner ``httpx.AsyncHTTPTransport`` (an ``ssl.SSLContext`` for private CAs in tests).
    Use :func:`fetch_limited` to read bodies with the decoded-size cap and a total deadline.
    """
    return GuardedClient(policy, resolver=resolver, verify=verify)


async def fetch_limited(
    client: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    *,
    max_bytes: int | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send a request and read at most ``max_bytes`` of the (decoded) body.

    ``max_bytes`` defaults to the client's ``policy.max_response_bytes`` for a
    :class:`GuardedClient`, else 1 MiB (a :class:`GuardedTransport` still enforces its
    policy's cap on the wire, so ``max_bytes`` can only lower the effective limit). Raises
    :class:`ResponseTooLarge` beyond it (also for decompression bombs, since the decoded size
    is counted) and ``httpx.ReadTimeout`` if the whole exchange exceeds the policy timeout (a
    total deadline, unlike httpx's per-phase timeouts). The returned response is fully read;
    its ``Content-Encoding`` header is removed because ``content`` is already decoded.
    ``kwargs`` go to ``client.stream``.
    """
    policy = getattr(client, "policy", None)
    policy = policy if isinstance(policy, OutboundPolicy) else OutboundPolicy()
    cap = max_bytes if max_bytes is not None else policy.max_response_bytes
    try:
        with anyio.fail_after(policy.timeout_seconds):
            return await _fetch(client, method, url, cap, kwargs)
    except TimeoutError:
        raise httpx.ReadTimeout(
            f"request exceeded the total deadline of {policy.timeout_seconds} s"
        ) from None


async def _fetch(
    client: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    cap: int,
    kwargs: dict[str, Any],
) -> httpx.Response:
    async with client.stream(method, url, **kwargs) as response:
        host = response.request.url.host
        declared = _declared_length(response.headers)
        if method.upper() != "HEAD" and declared is not None and declared > cap:
            raise ResponseTooLarge(
                f"response from host {host!r} declares {declared} bytes (limit {cap})", host=host
            )
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > cap:
                raise ResponseTooLarge(
                    f"response from host {host!r} exceeds {cap} bytes", host=host
                )
    headers = response.headers.copy()
    headers.pop("content-encoding", None)
    headers.pop("content-length", None)
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=bytes(body),
        request=response.request,
        extensions={
            k: v for k, v in response.extensions.items() if k in ("http_version", "reason_phrase")
        },
    )


# --------------------------------------------------------------------------- reporting


def state(policy: OutboundPolicy | None = None) -> tuple[str, dict[str, object]]:
    """Status line for fangwire's security report: ``("active", details)``.

    The guard has no runtime state to fail; ``details`` summarise the policy in force
    (``policy`` defaults to :class:`OutboundPolicy`'s defaults).
    """
    p = policy or OutboundPolicy()
    return (
        "active",
        {
            "allowlisted_hosts": len(p.allow_hosts),
            "allowed_schemes": list(p.allowed_schemes),
            "allowed_ports": "any" if p.allowed_ports is None else list(p.allowed_ports),
            "max_response_bytes": p.max_response_bytes,
            "timeout_seconds": p.timeout_seconds,
            "redirects": "not followed",
        },
    )
