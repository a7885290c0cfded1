"""JSON Web Key Sets: parsing, and the three key sources an issuer can have.

* ``StaticKeySource``: keys written inline in the trusted-issuer file.
* ``FileKeySource``: a JWKS file; re-read when it changes (mtime/size), so keys rotate without
  a restart. A file that becomes invalid keeps the last good keys (and logs an error).
* ``UrlKeySource``: a JWKS fetched over HTTPS (one deadline from connect to last byte, headers
  included; size cap; no redirects), cached for ``settings.jwks_cache_ttl`` seconds and
  re-fetched once on an unknown ``kid``. Every fetch attempt, scheduled or forced, is
  rate-limited by ``settings.jwks_refresh_interval`` so a flood of tokens with made-up ``kid``
  values cannot make us hammer the issuer. Fetches run outside the source's lock, at most one
  in flight per URL: while one runs (or trickles), tokens whose key is cached are verified at
  once (issue #11, finding 4); a TTL refresh runs in the background while cached keys serve.

Only public signature keys are accepted: EC (P-256/384/521), RSA (>= 2048 bits) and OKP
(Ed25519/Ed448). Symmetric (``oct``) keys and anything holding private-key members are refused.
Each worker process has its own cache; that is fine (keys are public and re-fetchable).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import requests
from jwt import PyJWK
from jwt.exceptions import PyJWKError

from cds_service.http_body import BodyTimedOut, BodyTooLarge, CallDeadline, DeadlineAdapter, read_capped

log = logging.getLogger("ptsd_cds.auth")

MAX_JWKS_BYTES = 512 * 1024
FETCH_TIMEOUT = (3.0, 5.0)  # (connect, read) seconds
STALE_LIMIT = 24 * 3600  # seconds a cached JWKS may outlive its TTL while the issuer is unreachable
MIN_RSA_BITS = 2048
MAX_KID_LENGTH = 256

_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")

# header alg -> (kty, curve or None)
ALGORITHM_KEYS: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "EdDSA": ("OKP", None),
}
_EC_DEFAULT_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


class JwksError(Exception):
    """A JWKS document or key is unusable (message names the problem, never key material)."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    kty: str
    alg: str | None  # the JWK's own "alg", if it declares one
    crv: str | None
    key: Any  # a cryptography public key object

    def usable_with(self, alg: str) -> bool:
        wanted = ALGORITHM_KEYS.get(alg)
        if wanted is None:
            return False
        kty, crv = wanted
        if self.kty != kty:
            return False
        if crv is not None and self.crv != crv:
            return False
        return self.alg is None or self.alg == alg


KeySet = dict[str, tuple[VerificationKey, ...]]


def parse_key(jwk: Any) -> VerificationKey:
    """One JWK -> VerificationKey, or JwksError saying why it is refused."""
    if not isinstance(jwk, dict):
        raise JwksError("a key is not a JSON object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise JwksError("a key has no usable 'kid' (tokens must name their key)")
    kty = jwk.get("kty")
    if kty == "oct":
        raise JwksError(f"key {kid!r} is symmetric (kty 'oct'); only public keys are accepted")
    if kty not in ("EC", "RSA", "OKP"):
        raise JwksError(f"key {kid!r} has unsupported kty {kty!r}")
    present = [m for m in _PRIVATE_MEMBERS if m in jwk]
    if present:
        raise JwksError(f"key {kid!r} contains private-key members {present}; publish public keys only")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise JwksError(f"key {kid!r} has use {use!r}, not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise JwksError(f"key {kid!r} has key_ops without 'verify'")
    alg = jwk.get("alg")
    if alg is not None and alg not in ALGORITHM_KEYS:
        raise JwksError(f"key {kid!r} declares alg {alg!r}, which is not a supported signature algorithm")
    crv = jwk.get("crv")
    if kty == "EC":
        build_alg = _EC_DEFAULT_ALG.get(crv)
        if build_alg is None:
            raise JwksError(f"key {kid!r} has unsupported curve {crv!r}")
    elif kty == "RSA":
        build_alg = "RS256"  # only selects the key parser; the token's alg picks the hash
    else:
        build_alg = "EdDSA"
    if alg is not None and ALGORITHM_KEYS[alg][0] != kty:
        raise JwksError(f"key {kid!r} declares alg {alg!r} but is kty {kty!r}")
    if alg is not None and ALGORITHM_KEYS[alg][1] not in (None, crv):
        raise JwksError(f"key {kid!r} declares alg {alg!r} but curve {crv!r}")
    try:
        key = PyJWK(jwk, algorithm=build_alg).key
    except (PyJWKError, ValueError, TypeError) as exc:
        raise JwksError(f"key {kid!r} cannot be read ({exc})") from None
    if kty == "RSA" and getattr(key, "key_size", 0) < MIN_RSA_BITS:
        raise JwksError(f"key {kid!r} is RSA with {getattr(key, 'key_size', 0)} bits; at least {MIN_RSA_BITS} needed")
    if not hasattr(key, "verify") or hasattr(key, "private_numbers") or hasattr(key, "private_bytes"):
        raise JwksError(f"key {kid!r} is not a public key")
    return VerificationKey(kid=kid, kty=kty, alg=alg, crv=crv if isinstance(crv, str) else None, key=key)


def parse_jwks(doc: Any, *, strict: bool, where: str = "JWKS") -> KeySet:
    """A JWKS document -> {kid: keys}. ``strict`` (configuration files): any bad key is an error.

    Not strict (fetched documents): bad keys are skipped with a warning; no usable key at all
    is still an error.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError(f"{where}: not a JWK Set (an object with a 'keys' array)")
    out: dict[str, list[VerificationKey]] = {}
    for i, jwk in enumerate(doc["keys"]):
        try:
            key = parse_key(jwk)
        except JwksError as exc:
            if strict:
                raise JwksError(f"{where}: keys[{i}]: {exc}") from None
            log.warning("%s: ignoring keys[%d]: %s", where, i, exc)
            continue
        out.setdefault(key.kid, []).append(key)
    if not out:
        raise JwksError(f"{where}: no usable signature keys")
    return {kid: tuple(keys) for kid, keys in out.items()}


def find_key(keys: KeySet | None, kid: str, alg: str) -> VerificationKey | None:
    for key in (keys or {}).get(kid, ()):
        if key.usable_with(alg):
            return key
    return None


class KeySource(Protocol):
    description: str

    def lookup(self, kid: str, alg: str) -> VerificationKey | None: ...


class StaticKeySource:
    """Keys written inline in the trusted-issuer file."""

    def __init__(self, doc: Any, *, where: str = "jwks"):
        self.description = "inline jwks"
        self.keys = parse_jwks(doc, strict=True, where=where)

    def lookup(self, kid: str, alg: str) -> VerificationKey | None:
        return find_key(self.keys, kid, alg)


def read_jwks_file(path: Path, *, strict: bool = True) -> KeySet:
    try:
        if path.stat().st_size > MAX_JWKS_BYTES:
            raise JwksError(f"{path}: larger than {MAX_JWKS_BYTES} bytes")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JwksError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise JwksError(f"{path}: not valid JSON ({exc})") from None
    return parse_jwks(doc, strict=strict, where=str(path))


class FileKeySource:
    """A JWKS file, re-read whenever its modification time or size changes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.description = f"jwks_file {self.path}"
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self.keys = read_jwks_file(self.path, strict=True)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _maybe_reload(self) -> None:
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            try:
                self.keys = read_jwks_file(self.path, strict=True)
                log.info("reloaded %s (%d key ids)", self.path, len(self.keys))
            except JwksError as exc:
                log.error("keeping previous keys: %s", exc)
            self._stamp = stamp

    def lookup(self, kid: str, alg: str) -> VerificationKey | None:
        self._maybe_reload()
        return find_key(self.keys, kid, alg)


class JwksFetcher:
    """GET a JWKS over HTTPS: no redirects, timeouts, size cap. Returns the parsed KeySet."""

    def __init__(self, session: requests.Session | None = None, *, timeout=FETCH_TIMEOUT,
                 max_bytes: int = MAX_JWKS_BYTES):
        self.session = session or requests.Session()
        for prefix in ("https://", "http://"):
            self.session.mount(prefix, DeadlineAdapter())
        self.timeout = timeout
        self.max_bytes = max_bytes

    @property
    def budget(self) -> float:
        """Seconds one fetch may take, connect to last byte."""
        return float(sum(self.timeout))

    def fetch(self, url: str) -> KeySet:
        if not url.startswith("https://"):
            raise JwksError("JWKS URLs must use https")
        with CallDeadline(time.monotonic() + self.budget) as guard:
            try:
                resp = self.session.get(
                    url,
                    headers={"Accept": "application/jwk-set+json, application/json"},
                    timeout=self.timeout,
                    allow_redirects=False,
                    stream=True,
                )
            except (requests.RequestException, OSError, ValueError) as exc:
                if guard.fired.is_set():
                    raise JwksError(f"{url}: still sending its headers after {self.budget:g} s") from None
                if isinstance(exc, requests.Timeout):
                    raise JwksError(f"{url}: timed out") from None
                raise JwksError(f"{url}: unreachable ({type(exc).__name__})") from None
            try:
                if resp.status_code != 200:
                    raise JwksError(f"{url}: HTTP {resp.status_code} (redirects are not followed)")
                body = read_capped(resp, self.max_bytes)
            except BodyTooLarge:
                raise JwksError(f"{url}: larger than {self.max_bytes} bytes") from None
            except BodyTimedOut:
                raise JwksError(f"{url}: still sending after {self.budget:g} s") from None
            except requests.RequestException as exc:
                raise JwksError(f"{url}: could not be read ({type(exc).__name__})") from None
            finally:
                resp.close()
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise JwksError(f"{url}: not JSON") from None
        return parse_jwks(doc, strict=False, where=url)


class UrlKeySource:
    """A JWKS URL with a TTL cache and a rate-limited re-fetch on an unknown kid."""

    def __init__(self, url: str, fetcher: JwksFetcher, *, ttl: float, refresh_interval: float,
                 clock: Callable[[], float] = time.monotonic):
        self.url = url
        self.description = f"jwks_url {url}"
        self.fetcher = fetcher
        self.ttl = ttl
        self.refresh_interval = refresh_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._inflight: threading.Event | None = None  # set when the running fetch ends
        self.fetch_count = 0  # attempts (for tests and diagnostics)

    def _may_attempt(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.refresh_interval

    def _begin(self, now: float) -> threading.Event:
        """Mark a fetch in flight (caller holds the lock)."""
        self._attempted_at = now
        self.fetch_count += 1
        self._inflight = threading.Event()
        return self._inflight

    def _fetch(self, done: threading.Event, started: float) -> None:
        """Run one fetch without holding the lock, then publish its keys."""
        try:
            keys = self.fetcher.fetch(self.url)
        except JwksError as exc:
            log.warning("JWKS fetch failed: %s", exc)
            keys = None
        except Exception as exc:  # never leave the in-flight marker set
            log.error("JWKS fetch failed unexpectedly: %s", type(exc).__name__)
            keys = None
        with self._lock:
            if keys is not None:
                self._keys = keys
                self._fetched_at = started
            self._inflight = None
        done.set()

    def _current(self, now: float) -> KeySet | None:
        if self._keys is None or self._fetched_at is None:
            return None
        if now - self._fetched_at > self.ttl + STALE_LIMIT:
            return None  # too old to trust even as a fallback
        return self._keys

    def lookup(self, kid: str, alg: str) -> VerificationKey | None:
        fetch_here: threading.Event | None = None
        with self._lock:
            now = self.clock()
            expired = self._fetched_at is None or now - self._fetched_at >= self.ttl
            key = find_key(self._current(now), kid, alg)
            if key is not None:
                if expired and self._inflight is None and self._may_attempt(now):
                    # Refresh in the background; the cached key serves this call meanwhile.
                    done = self._begin(now)
                    threading.Thread(target=self._fetch, args=(done, now), name="jwks-refresh",
                                     daemon=True).start()
                return key
            # Unknown kid (or nothing cached): the issuer may have rotated its keys.
            if self._inflight is not None:
                waiting = self._inflight  # someone is fetching: wait for it, do not fetch again
            elif self._may_attempt(now):
                waiting = fetch_here = self._begin(now)
            else:
                return None
        if fetch_here is not None:
            self._fetch(fetch_here, now)
        else:
            waiting.wait(self.fetcher.budget + 1.0)
        with self._lock:
            return find_key(self._current(self.clock()), kid, alg)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no fetch is in flight (tests, shutdown). True when idle."""
        with self._lock:
            inflight = self._inflight
        return inflight is None or inflight.wait(timeout)

    @property
    def available(self) -> bool:
        return self._keys is not None


class JwksCache:
    """One UrlKeySource per JWKS URL, shared by every issuer that names it (per process)."""

    def __init__(self, settings, *, session: requests.Session | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.fetcher = JwksFetcher(session)
        self.ttl = settings.jwks_cache_ttl
        self.refresh_interval = settings.jwks_refresh_interval
        self.clock = clock
        self._sources: dict[str, UrlKeySource] = {}
        self._lock = threading.Lock()

    def source(self, url: str) -> UrlKeySource:
        with self._lock:
            src = self._sources.get(url)
            if src is None:
                src = UrlKeySource(url, self.fetcher, ttl=self.ttl, refresh_interval=self.refresh_interval,
                                   clock=self.clock)
                self._sources[url] = src
            return src
