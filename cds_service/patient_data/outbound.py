"""Outbound HTTP to a client's FHIR server: which servers may be called, and how.

Contract used by ``cds_service.patient_data.fhir_client``:

* ``OutboundPolicy(settings, resolver=None)``; ``resolver`` has the signature of
  ``socket.getaddrinfo`` (the default) so tests can map test host names to test addresses.
* ``policy.check_fhir_server(fhir_server, identity)`` raises ``FhirServerRefused`` (HTTP 400)
  before any connection is made when the server is not allowed for the caller. It does no DNS.
* ``policy.get_json(session, url, base=fhir_server, token=..., timeout=(connect, read),
  deadline=None, max_bytes=None)`` returns the parsed JSON object, or raises ``FhirFetchError``
  (the hook then answers 412 if the data was required). ``FhirAddressRefused`` is a
  ``FhirFetchError``. ``deadline`` (``time.monotonic()``) bounds the whole call from connect to
  last byte, headers included (``http_body.CallDeadline``); ``get_json_sized`` also returns the
  body's size (for the per-call totals of ``FhirClient``).
* ``policy.new_session()`` gives a ``requests.Session`` with the guarded adapter mounted;
  ``get_json`` mounts it on any session it is handed, so either way every connection is checked.

What is enforced (issue #4, SECURITY.md):

1. Allow-list: ``fhirServer`` must lie under a base URL allowed for the calling issuer
   (``identity.fhir_servers``) or for everyone (``settings.fhir_servers``). Matching is on
   scheme + host + effective port + path, path-segment aware: ``https://a.org/fhir`` allows
   ``https://a.org/fhir/R4`` but not ``https://a.org/fhirX`` or ``https://a.org.evil.com/fhir``.
   With authentication off (anonymous caller) loopback servers are allowed for development.
2. ``https`` is required except for loopback hosts (``localhost``, 127.0.0.0/8, ::1).
3. Addresses: every address a host name resolves to is checked, and the connection is made to
   an address that was checked (the guarded urllib3 connection resolves, checks and connects in
   one step, so DNS re-binding between check and connect does not help). Link-local,
   cloud-metadata, unspecified, multicast, broadcast and reserved addresses are always refused;
   loopback only when the URL itself names a loopback host. Private ranges (10/8, 172.16/12,
   192.168/16, fc00::/7) are *not* refused: hospital FHIR servers live there, so the allow-list
   is what protects them.
4. No redirects (a 3xx is an error); no proxies; URLs outside ``base`` (e.g. a ``next`` link to
   another host) are not fetched at all, so the access token cannot follow them; the response
   is streamed and reading stops at ``settings.fhir_max_response`` bytes.
5. The access token is only ever put in the Authorization header of a request to ``base``'s
   origin; it is never logged, stored or put in an exception message.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import unquote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from cds_service.config import ConfigError
from cds_service.http_body import BodyTimedOut, BodyTooLarge, CallDeadline, DeadlinePoolMixin, read_capped

Resolver = Callable[..., list]


class FhirServerRefused(Exception):
    """The request names a fhirServer this service will not call (message is safe to return)."""


class FhirFetchError(Exception):
    """A FHIR query failed (message is safe to log: no token, no patient data).

    ``status`` is the FHIR server's HTTP status when it answered with an error, else None.
    """

    def __init__(self, message: str, *, status: int | None = None, size_exceeded: bool = False):
        super().__init__(message)
        self.status = status
        self.size_exceeded = size_exceeded


class FhirAddressRefused(FhirFetchError):
    """The FHIR server's host resolved to an address this service never connects to."""


# --- addresses -------------------------------------------------------------------------------

_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})

# Always refused, whatever the allow-list says (checked in addition to the ipaddress flags).
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on many systems
        "169.254.0.0/16",  # IPv4 link-local, incl. 169.254.169.254 (AWS/GCP/Azure/OCI metadata)
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "192.0.0.192/32",  # Oracle Cloud (legacy) metadata
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. 255.255.255.255 broadcast
        "::/128",  # unspecified
        "fe80::/10",  # IPv6 link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # IPv6 multicast
        "fd00:ec2::254/128",  # AWS IPv6 metadata
    )
)
_LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _embedded_ipv4(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address carried inside an IPv6 one (mapped, NAT64, 6to4, compatible), if any."""
    if addr.version != 6:
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in ipaddress.ip_network("64:ff9b::/96"):  # NAT64 well-known prefix
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in ipaddress.ip_network("::/96") and int(addr) > 1:  # deprecated IPv4-compatible
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def is_loopback_host(host: str | None) -> bool:
    """True when the URL host itself names the local machine (not what it resolves to)."""
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    addr = _ip_literal(host)
    return addr is not None and any(addr in n for n in _LOOPBACK_NETWORKS)


def address_refusal(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool) -> str | None:
    """Why ``addr`` may not be connected to, or None when it may."""
    # An IPv6 address that carries an IPv4 one (::ffff:169.254.169.254, 64:ff9b::a9fe:a9fe...)
    # is judged by the IPv4 address it reaches.
    inner = _embedded_ipv4(addr)
    candidates = [inner] if inner is not None else [addr]
    for a in candidates:
        if any(a in n for n in _LOOPBACK_NETWORKS):
            if not allow_loopback:
                return "loopback address for a non-loopback host name"
            continue
        if any(a.version == n.version and a in n for n in _BLOCKED_NETWORKS):
            return "link-local, metadata, multicast or reserved address"
        if a.is_link_local or a.is_multicast or a.is_unspecified or a.is_reserved:
            return "link-local, multicast, unspecified or reserved address"
    return None


def static_resolver(table: Mapping[str, str | Iterable[str]]) -> Resolver:
    """A ``getaddrinfo``-compatible resolver answering from a fixed table (tests, pinned hosts).

    Names not in the table raise ``socket.gaierror`` like an unknown host would.
    """
    norm = {k.lower(): ([v] if isinstance(v, str) else list(v)) for k, v in table.items()}

    def resolve(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - getaddrinfo names
        ips = norm.get(str(host).lower())
        if not ips:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for ip in ips:
            a = ipaddress.ip_address(ip)
            fam = socket.AF_INET6 if a.version == 6 else socket.AF_INET
            sockaddr = (ip, port, 0, 0) if a.version == 6 else (ip, port)
            out.append((fam, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return out

    return resolve


# --- URLs ------------------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class BaseUrl:
    """A parsed http(s) base URL, normalised for allow-list matching."""

    scheme: str
    host: str  # lower-case, IPv6 without brackets
    port: int  # effective port
    path: str  # without trailing "/" ("" for the root)

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.host)

    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    def contains(self, other: "BaseUrl") -> bool:
        """``other`` is this URL or lies below it (whole path segments only)."""
        if other.origin() != self.origin():
            return False
        return other.path == self.path or other.path.startswith(self.path + "/")


def parse_url(url: str, *, allow_query: bool = False) -> BaseUrl:
    """Parse and normalise an absolute http(s) URL; ValueError (safe message) when unusable."""
    if not isinstance(url, str) or not url:
        raise ValueError("must be an absolute https URL")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url) or "\\" in url:
        raise ValueError("contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("must be an absolute https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("must not contain user information")
    if parts.fragment or (parts.query and not allow_query):
        raise ValueError("must not have a query or fragment")
    raw_path = parts.path
    lowered = raw_path.lower()
    if "%2f" in lowered or "%5c" in lowered or "%00" in lowered:
        raise ValueError("must not contain encoded slashes")
    segments = raw_path.split("/")
    if any(unquote(s) in (".", "..") for s in segments):
        raise ValueError("must not contain '.' or '..' path segments")
    host = parts.hostname.lower()
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    return BaseUrl(scheme=scheme, host=host, port=port, path=raw_path.rstrip("/"))


def validate_base_url(url: str) -> BaseUrl:
    """Check a configured FHIR base URL (allow-list entry); ValueError with the reason.

    ``https`` is required except for loopback hosts; literal addresses that are never
    connected to (metadata, link-local...) are refused.
    """
    base = parse_url(url)
    if base.scheme != "https" and not base.loopback:
        raise ValueError("must use https (plain http is allowed only for localhost / 127.0.0.1 / ::1)")
    literal = _ip_literal(base.host)
    if literal is not None:
        why = address_refusal(literal, allow_loopback=True)
        if why:
            raise ValueError(f"names a refused address ({why})")
    return base


def same_origin(url: str, base: str) -> bool:
    """Same scheme, host and effective port (``https://a.org`` == ``https://a.org:443``)."""
    try:
        return parse_url(url, allow_query=True).origin() == parse_url(base, allow_query=True).origin()
    except ValueError:
        return False


# --- guarded connections ---------------------------------------------------------------------


class _GuardMixin:
    """urllib3 connection that resolves, checks and connects to a checked address in one step."""

    _ptsd_policy: "OutboundPolicy"

    def _new_conn(self):  # type: ignore[override]
        host = self._dns_host  # type: ignore[attr-defined]
        port = self.port  # type: ignore[attr-defined]
        addresses = self._ptsd_policy.checked_addresses(host, port)  # raises FhirAddressRefused
        last: OSError | None = None
        for ip in addresses:
            try:
                sock = urllib3_connection.create_connection(
                    (ip, port),
                    self.timeout,  # type: ignore[attr-defined]
                    source_address=self.source_address,  # type: ignore[attr-defined]
                    socket_options=self.socket_options,  # type: ignore[attr-defined]
                )
            except socket.timeout as exc:
                raise ConnectTimeoutError(self, f"Connection to {host} timed out") from exc
            except OSError as exc:
                last = exc
                continue
            sys.audit("http.client.connect", self, host, port)
            return sock
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")  # type: ignore[arg-type]


class GuardedAdapter(HTTPAdapter):
    """requests adapter whose connections go only to addresses the policy accepts; no proxies."""

    def __init__(self, policy: "OutboundPolicy", **kwargs: Any):
        self._ptsd_policy = policy
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        policy = self._ptsd_policy
        http_conn = type("GuardedHTTPConnection", (_GuardMixin, HTTPConnection), {"_ptsd_policy": policy})
        https_conn = type("GuardedHTTPSConnection", (_GuardMixin, HTTPSConnection), {"_ptsd_policy": policy})
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPConnectionPool", (DeadlinePoolMixin, HTTPConnectionPool),
                         {"ConnectionCls": http_conn}),
            "https": type("GuardedHTTPSConnectionPool", (DeadlinePoolMixin, HTTPSConnectionPool),
                          {"ConnectionCls": https_conn}),
        }

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any):  # noqa: ARG002
        # A proxy would do its own DNS and connect anywhere: the address check would be void.
        raise FhirFetchError("outbound proxies are not supported for FHIR calls")

    def __getstate__(self):  # pragma: no cover - never pickled
        raise TypeError("GuardedAdapter cannot be pickled")


_NO_PROXIES = {"http": None, "https": None, "all": None}


# --- policy ----------------------------------------------------------------------------------


class OutboundPolicy:
    CHUNK = 64 * 1024

    def __init__(self, settings, *, resolver: Resolver | None = None):
        self.settings = settings
        self.resolver: Resolver = resolver or socket.getaddrinfo
        self._mount_lock = threading.Lock()
        allowed = []
        for url in settings.fhir_servers:
            try:
                allowed.append(validate_base_url(url))
            except ValueError as exc:
                raise ConfigError(f"PTSD_CDS_FHIR_SERVERS: {url!r} {exc}") from None
        self.allowed: tuple[BaseUrl, ...] = tuple(allowed)

    # --- which servers ---------------------------------------------------------------------
    def _allowed_for(self, identity) -> list[BaseUrl]:
        out = list(self.allowed)
        for url in getattr(identity, "fhir_servers", ()) or ():
            try:
                out.append(validate_base_url(url))
            except ValueError:
                continue  # the issuer file is validated at load; ignore anything odd here
        return out

    def check_fhir_server(self, fhir_server: str, identity) -> None:
        """Raise FhirServerRefused unless ``fhir_server`` may be called for ``identity`` (no I/O)."""
        try:
            target = parse_url(fhir_server)
        except ValueError as exc:
            raise FhirServerRefused(f"fhirServer {exc}") from None
        if target.scheme != "https" and not target.loopback:
            raise FhirServerRefused("fhirServer must use https")
        literal = _ip_literal(target.host)
        if literal is not None and address_refusal(literal, allow_loopback=target.loopback):
            raise FhirServerRefused("fhirServer is not allowed for this client")
        if getattr(identity, "anonymous", False) and target.loopback:
            return  # authentication off (development): a local FHIR server is fine
        if any(entry.contains(target) for entry in self._allowed_for(identity)):
            return
        raise FhirServerRefused("fhirServer is not allowed for this client")

    # --- which addresses -------------------------------------------------------------------
    def checked_addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` and return its addresses if *every* one is acceptable.

        Raises FhirAddressRefused when any address is refused (a name that resolves partly to
        a metadata address is treated as hostile), FhirFetchError when it does not resolve.
        """
        allow_loopback = is_loopback_host(host)
        literal = _ip_literal(host)
        if literal is not None:
            addrs = [literal]
        else:
            try:
                infos = self.resolver(host, port, 0, socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError, OSError):
                raise FhirFetchError("FHIR server host name does not resolve") from None
            addrs = []
            for info in infos:
                try:
                    addrs.append(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
                except (ValueError, IndexError, TypeError):
                    raise FhirAddressRefused("FHIR server host resolved to an unusable address") from None
            if not addrs:
                raise FhirFetchError("FHIR server host name does not resolve")
        for addr in addrs:
            why = address_refusal(addr, allow_loopback=allow_loopback)
            if why:
                raise FhirAddressRefused(f"FHIR server host resolves to a refused address ({why})")
        seen: list[str] = []
        for addr in addrs:
            if str(addr) not in seen:
                seen.append(str(addr))
        return seen

    # --- how to fetch ----------------------------------------------------------------------
    def new_session(self) -> requests.Session:
        session = requests.Session()
        self._ensure_guarded(session)
        return session

    def _ensure_guarded(self, session: requests.Session) -> None:
        # Locked: session.mount re-orders session.adapters, which a concurrent get_adapter
        # would trip over. Once mounted, later calls only read.
        with self._mount_lock:
            for prefix in ("https://", "http://"):
                adapter = session.adapters.get(prefix)
                if not (isinstance(adapter, GuardedAdapter) and adapter._ptsd_policy is self):
                    session.mount(prefix, GuardedAdapter(self))

    def get_json(self, session: requests.Session, url: str, *, base: str, token: str | None,
                 timeout: tuple[float, float], deadline: float | None = None,
                 max_bytes: int | None = None) -> dict:
        return self.get_json_sized(session, url, base=base, token=token, timeout=timeout,
                                   deadline=deadline, max_bytes=max_bytes)[0]

    def get_json_sized(self, session: requests.Session, url: str, *, base: str, token: str | None,
                       timeout: tuple[float, float], deadline: float | None = None,
                       max_bytes: int | None = None) -> tuple[dict, int]:
        """``get_json`` plus the number of body bytes read. ``deadline`` (``time.monotonic()``)
        bounds the whole call, connect to last byte (default: now + connect + read timeout);
        ``max_bytes`` lowers the per-response cap (what is left of the call's total)."""
        try:
            base_url = parse_url(base)
            target = parse_url(url, allow_query=True)
        except ValueError:
            raise FhirFetchError("FHIR URL is not usable") from None
        if not base_url.contains(target):
            # e.g. a Bundle next link naming another host: never followed, token never sent.
            raise FhirFetchError("FHIR link points outside fhirServer; not followed")
        if target.scheme != "https" and not target.loopback:
            raise FhirFetchError("FHIR server must use https")
        # Early check (also what tests with `responses` exercise); the guarded connection
        # repeats it and connects only to an address it checked.
        self.checked_addresses(target.host, target.port)
        self._ensure_guarded(session)
        if not isinstance(session.get_adapter(url), GuardedAdapter):
            raise FhirFetchError("FHIR session has an unguarded adapter for this URL")

        headers = {"Accept": "application/fhir+json, application/json"}
        if token and same_origin(url, base):
            headers["Authorization"] = f"Bearer {token}"
        cap = self.settings.fhir_max_response if max_bytes is None else min(max_bytes, self.settings.fhir_max_response)
        if deadline is None:
            deadline = time.monotonic() + sum(timeout)
        # One deadline from connect to the last byte, status line and headers included.
        with CallDeadline(deadline) as guard:
            try:
                resp = session.get(url, headers=headers, timeout=timeout, allow_redirects=False,
                                   stream=True, proxies=dict(_NO_PROXIES))
            except FhirFetchError:
                raise
            except (requests.RequestException, OSError, ValueError) as exc:
                if guard.fired.is_set():
                    raise FhirFetchError("FHIR server still sending its response headers when the time "
                                         "budget ran out") from None
                if isinstance(exc, requests.Timeout):
                    raise FhirFetchError("FHIR server timed out") from None
                raise FhirFetchError(f"FHIR server unreachable ({type(exc).__name__})") from None
            try:
                if 300 <= resp.status_code < 400:
                    raise FhirFetchError(f"FHIR server answered with a redirect (HTTP {resp.status_code}); "
                                         "not followed", status=resp.status_code)
                if resp.status_code != 200:
                    raise FhirFetchError(f"FHIR server answered HTTP {resp.status_code}", status=resp.status_code)
                try:
                    body = read_capped(resp, cap, self.CHUNK)
                except BodyTooLarge:
                    raise FhirFetchError("FHIR response too large" if cap == self.settings.fhir_max_response
                                         else "FHIR responses of this call exceed PTSD_CDS_FHIR_MAX_TOTAL_BYTES",
                                         size_exceeded=True) from None
                except BodyTimedOut:
                    raise FhirFetchError("FHIR response still arriving when the time budget ran out") from None
                except requests.RequestException as exc:
                    raise FhirFetchError(f"FHIR response could not be read ({type(exc).__name__})") from None
            finally:
                resp.close()
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise FhirFetchError("FHIR server answered with something that is not JSON") from None
        if not isinstance(data, dict):
            raise FhirFetchError("FHIR server answered with JSON that is not a resource")
        return data, len(body)
