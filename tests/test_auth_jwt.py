"""Client authentication (issue #4): JwtAuthenticator, the trusted-issuer file and the JWKS cache.

Keys are generated here; JWKS URLs are faked with `responses`. Every negative test pairs with a
positive one built the same way, so a failure means the specific check fired.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import shutil
import time
import uuid
from pathlib import Path

import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_service.auth import AuthenticationError, ClientIdentity, NoAuthentication, build_authenticator
from cds_service.auth.issuers import load_trusted_issuers
from cds_service.auth.jwt_auth import JwtAuthenticator
from cds_service.config import ConfigError, Settings
from cds_service.store import Store
from tests.reference import SHARED

ISS = "https://ehr.example.org"
AUD = "https://cds.example.org/cds-services/ptsd-next-step"
JWKS_URL = "https://ehr.example.org/.well-known/jwks.json"
FHIR = "https://fhir.example.org/fhir/R4"
DATA = Path(__file__).resolve().parent.parent / "cds_service" / "data"

pytestmark = pytest.mark.spec("JWT-01 JWT-03 JWT-04 JWT-05 JWT-06 JWT-07 JWT-08 JWT-09 JWT-10")


# --- keys and tokens ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def ec_key2():
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key, kid: str, alg: str | None = None) -> dict:
    pub = private_key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(pub, as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(pub, as_dict=True)
    jwk.update({"kid": kid, "use": "sig"})
    if alg:
        jwk["alg"] = alg
    return jwk


def make_token(private_key, *, alg="ES384", kid="ec-1", iss=ISS, aud=AUD, lifetime=300, iat=None,
               jti="auto", drop=(), headers=None, **extra) -> str:
    now = int(time.time())
    iat = now if iat is None else iat
    claims = {"iss": iss, "aud": aud, "iat": iat, "exp": iat + lifetime,
              "jti": str(uuid.uuid4()) if jti == "auto" else jti, **extra}
    for name in drop:
        claims.pop(name, None)
    hdr = {"typ": "JWT", **({"kid": kid} if kid is not None else {}), **(headers or {})}
    return jwt.encode(claims, private_key, algorithm=alg, headers=hdr)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# --- configuration -----------------------------------------------------------------------------
def write_issuers(tmp_path: Path, issuers: list[dict], name="issuers.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"issuers": issuers}))
    return path


def settings_for(tmp_path: Path, issuers_file: Path, **overrides) -> Settings:
    return Settings().with_overrides({
        "auth": "required",
        "trusted_issuers": str(issuers_file),
        "database": str(tmp_path / "db.sqlite3"),
        **overrides,
    })


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite3")
    yield s
    s.close()


@pytest.fixture
def static_auth(tmp_path, store, ec_key, rsa_key):
    """An authenticator trusting ISS with inline keys: ec-1 (P-384) and rsa-1."""
    issuers = write_issuers(tmp_path, [{
        "iss": ISS,
        "jwks": {"keys": [public_jwk(ec_key, "ec-1", "ES384"), public_jwk(rsa_key, "rsa-1")]},
        "jku": [JWKS_URL],
        "fhir_servers": [FHIR],
    }])
    return JwtAuthenticator(settings_for(tmp_path, issuers), store)


def reject(auth, header, match, audience=AUD):
    with pytest.raises(AuthenticationError, match=match) as info:
        auth.authenticate(header, audience)
    return info.value


# --- accepted tokens -----------------------------------------------------------------------------
def test_valid_es384_token(static_auth, ec_key):
    ident = static_auth.authenticate(bearer(make_token(ec_key, jti="j-es384", tenant="t1")), AUD)
    assert isinstance(ident, ClientIdentity)
    assert (ident.iss, ident.jti, ident.kid, ident.tenant) == (ISS, "j-es384", "ec-1", "t1")
    assert ident.fhir_servers == (FHIR,)
    assert not ident.anonymous


def test_valid_rs384_token(static_auth, rsa_key):
    ident = static_auth.authenticate(bearer(make_token(rsa_key, alg="RS384", kid="rsa-1")), AUD)
    assert ident.iss == ISS and ident.kid == "rsa-1"


def test_aud_may_be_an_array_containing_the_url(static_auth, ec_key):
    assert static_auth.authenticate(bearer(make_token(ec_key, aud=[AUD])), AUD).iss == ISS
    assert static_auth.authenticate(bearer(make_token(ec_key, aud=["https://other", AUD])), AUD).iss == ISS


def test_bearer_scheme_is_case_insensitive(static_auth, ec_key):
    assert static_auth.authenticate("bearer " + make_token(ec_key), AUD).iss == ISS


def test_allowlisted_jku_on_static_issuer_is_accepted_without_fetching(static_auth, ec_key):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(JWKS_URL, json={"keys": []})
        ident = static_auth.authenticate(bearer(make_token(ec_key, headers={"jku": JWKS_URL})), AUD)
        assert ident.iss == ISS
        assert len(mock.calls) == 0


# --- signature and algorithm ----------------------------------------------------------------------
def test_wrong_signature(static_auth, ec_key2):
    # Signed by another P-384 key but claiming kid ec-1.
    reject(static_auth, bearer(make_token(ec_key2, kid="ec-1")), "bad signature")


def test_tampered_payload(static_auth, ec_key):
    header, _payload, sig = make_token(ec_key).split(".")
    forged_claims = {"iss": ISS, "aud": AUD, "iat": int(time.time()), "exp": int(time.time()) + 300,
                     "jti": "forged", "tenant": "someone-else"}
    reject(static_auth, bearer(f"{header}.{b64(forged_claims)}.{sig}"), "bad signature")


def test_key_confusion_hs256_with_public_key_pem(static_auth, rsa_key, ec_key):
    # The classic attack: HMAC-sign with the server's *public* key as the secret.
    for key, kid in ((rsa_key, "rsa-1"), (ec_key, "ec-1")):
        pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        header = b64({"alg": "HS256", "typ": "JWT", "kid": kid})
        now = int(time.time())
        payload = b64({"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())})
        import hashlib
        import hmac
        sig = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{header}.{payload}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
        reject(static_auth, bearer(token), "algorithm 'HS256' not accepted")


def test_alg_none(static_auth):
    now = int(time.time())
    for alg in ("none", "None", "NONE"):
        header = b64({"alg": alg, "typ": "JWT", "kid": "ec-1"})
        payload = b64({"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())})
        reject(static_auth, bearer(f"{header}.{payload}."), "not accepted")


def test_alg_must_match_key_type(static_auth, ec_key, rsa_key):
    # An RS384 token naming the EC key's kid finds no RS384-capable key under that kid.
    reject(static_auth, bearer(make_token(rsa_key, alg="RS384", kid="ec-1")), "no RS384 key with kid 'ec-1'")
    # ES256 (P-256) cannot use the P-384 key even if the signature were right.
    p256 = ec.generate_private_key(ec.SECP256R1())
    reject(static_auth, bearer(make_token(p256, alg="ES256", kid="ec-1")), "no ES256 key")


def test_alg_outside_configured_allowlist(tmp_path, store, ec_key, rsa_key):
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks": {"keys": [public_jwk(rsa_key, "rsa-1")]}}])
    auth = JwtAuthenticator(settings_for(tmp_path, issuers, jwt_algorithms="ES384"), store)
    reject(auth, bearer(make_token(rsa_key, alg="RS384", kid="rsa-1")), "algorithm 'RS384' not accepted")


def test_unsupported_algorithm_in_settings_is_a_config_error(tmp_path, store, ec_key):
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks": {"keys": [public_jwk(ec_key, "ec-1")]}}])
    with pytest.raises(ConfigError, match="JWT_ALGORITHMS"):
        JwtAuthenticator(settings_for(tmp_path, issuers, jwt_algorithms="ES384,XYZ999"), store)


# --- time ------------------------------------------------------------------------------------------
def test_expired(static_auth, ec_key):
    now = int(time.time())
    reject(static_auth, bearer(make_token(ec_key, iat=now - 400, lifetime=300)), "expired")


def test_expired_within_leeway_is_accepted(static_auth, ec_key):
    now = int(time.time())
    assert static_auth.authenticate(bearer(make_token(ec_key, iat=now - 302, lifetime=300)), AUD).iss == ISS


def test_iat_in_future_beyond_leeway(static_auth, ec_key):
    reject(static_auth, bearer(make_token(ec_key, iat=int(time.time()) + 60)), "in the future")


def test_iat_in_future_within_leeway_is_accepted(static_auth, ec_key):
    # The sandbox rounds iat up; default leeway (5 s) absorbs that.
    assert static_auth.authenticate(bearer(make_token(ec_key, iat=int(time.time()) + 3)), AUD).iss == ISS


def test_zero_leeway_rejects_future_iat(tmp_path, store, ec_key):
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks": {"keys": [public_jwk(ec_key, "ec-1")]}}])
    auth = JwtAuthenticator(settings_for(tmp_path, issuers, jwt_leeway=0), store)
    reject(auth, bearer(make_token(ec_key, iat=int(time.time()) + 3)), "in the future")


def test_lifetime_too_long(static_auth, ec_key):
    reject(static_auth, bearer(make_token(ec_key, lifetime=7200)), "lifetime 7200 s exceeds 3600 s")
    assert static_auth.authenticate(bearer(make_token(ec_key, lifetime=3600)), AUD).iss == ISS


def test_exp_before_iat(static_auth, ec_key):
    # exp = iat - 1 = now - 1: not yet expired given the 5 s leeway, so the exp < iat check decides.
    reject(static_auth, bearer(make_token(ec_key, lifetime=-1)), "exp before iat")


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "jti"])
def test_missing_required_claim(static_auth, ec_key, claim):
    reject(static_auth, bearer(make_token(ec_key, drop=(claim,))), "no iss|lacks claim")


# --- audience, issuer, kid, jku -----------------------------------------------------------------------
def test_wrong_aud(static_auth, ec_key):
    reject(static_auth, bearer(make_token(ec_key, aud="https://cds.example.org/cds-services")), "aud does not match")
    reject(static_auth, bearer(make_token(ec_key, aud=AUD + "/")), "aud does not match")
    reject(static_auth, bearer(make_token(ec_key, aud=["https://a", "https://b"])), "aud does not match")


def test_unknown_iss(static_auth, ec_key):
    reject(static_auth, bearer(make_token(ec_key, iss="https://evil.example.net")), "untrusted issuer")
    reject(static_auth, bearer(make_token(ec_key, iss=ISS + "/")), "untrusted issuer")


def test_missing_kid(static_auth, ec_key):
    reject(static_auth, bearer(make_token(ec_key, kid=None)), "no kid")


def test_unknown_kid_on_static_keys(static_auth, ec_key):
    reject(static_auth, bearer(make_token(ec_key, kid="ec-404")), "no ES384 key with kid 'ec-404'")


def test_jku_outside_allowlist_is_refused_and_never_fetched(static_auth, tmp_path, store, ec_key):
    evil = "https://attacker.example.net/jwks.json"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(evil, json={"keys": [public_jwk(ec_key, "ec-1")]})
        reject(static_auth, bearer(make_token(ec_key, headers={"jku": evil})), "not allow-listed")
        # Also for an issuer whose keys come from a URL.
        issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL}], name="url.json")
        url_auth = JwtAuthenticator(settings_for(tmp_path, issuers), store)
        reject(url_auth, bearer(make_token(ec_key, headers={"jku": evil})), "not allow-listed")
        assert len(mock.calls) == 0


def test_allowlisted_jku_is_where_a_url_issuer_keys_come_from(tmp_path, store, ec_key, ec_key2):
    other = "https://keys2.ehr.example.org/jwks.json"
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL, "jku": [other]}])
    auth = JwtAuthenticator(settings_for(tmp_path, issuers), store)
    with responses.RequestsMock() as mock:
        mock.get(JWKS_URL, json={"keys": [public_jwk(ec_key, "ec-1")]})
        mock.get(other, json={"keys": [public_jwk(ec_key2, "ec-2")]})
        assert auth.authenticate(bearer(make_token(ec_key2, kid="ec-2", headers={"jku": other})), AUD).kid == "ec-2"
        assert auth.authenticate(bearer(make_token(ec_key, kid="ec-1")), AUD).kid == "ec-1"
        assert [c.request.url for c in mock.calls] == [other, JWKS_URL]


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_unknown_kid_refetches_rotated_jwks_once_then_rate_limits(tmp_path, store, ec_key, ec_key2):
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL}])
    clock = FakeClock()
    auth = JwtAuthenticator(settings_for(tmp_path, issuers, jwks_refresh_interval=60, jwks_cache_ttl=3600),
                            store, clock=clock)
    old = {"keys": [public_jwk(ec_key, "old-1")]}
    new = {"keys": [public_jwk(ec_key, "old-1"), public_jwk(ec_key2, "new-2")]}
    with responses.RequestsMock() as mock:
        mock.get(JWKS_URL, json=old)
        mock.get(JWKS_URL, json=new)  # responses serves registered bodies in order
        # First use: fetch #1 (old keys) and accept a token with the old kid.
        assert auth.authenticate(bearer(make_token(ec_key, kid="old-1")), AUD).kid == "old-1"
        assert len(mock.calls) == 1
        # The issuer rotates. Right after a fetch, an unknown kid does not re-fetch (rate limit).
        reject(auth, bearer(make_token(ec_key2, kid="new-2")), "no ES384 key with kid 'new-2'")
        assert len(mock.calls) == 1
        # After the refresh interval, the unknown kid triggers one re-fetch: accepted, no restart.
        clock.now += 61
        assert auth.authenticate(bearer(make_token(ec_key2, kid="new-2")), AUD).kid == "new-2"
        assert len(mock.calls) == 2
        # A second unknown kid within the interval does not re-fetch.
        clock.now += 5
        reject(auth, bearer(make_token(ec_key2, kid="made-up")), "no ES384 key")
        assert len(mock.calls) == 2
        # Known kids keep working from the cache without fetching.
        assert auth.authenticate(bearer(make_token(ec_key, kid="old-1")), AUD).kid == "old-1"
        assert len(mock.calls) == 2


def test_jwks_cache_ttl_triggers_refetch(tmp_path, store, ec_key):
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL}])
    clock = FakeClock()
    auth = JwtAuthenticator(settings_for(tmp_path, issuers, jwks_cache_ttl=100, jwks_refresh_interval=10),
                            store, clock=clock)
    with responses.RequestsMock() as mock:
        mock.get(JWKS_URL, json={"keys": [public_jwk(ec_key, "ec-1")]})
        auth.authenticate(bearer(make_token(ec_key)), AUD)
        clock.now += 50
        auth.authenticate(bearer(make_token(ec_key)), AUD)
        assert len(mock.calls) == 1
        clock.now += 51
        # Past the TTL the cached key still serves this call; the refresh runs in the background.
        auth.authenticate(bearer(make_token(ec_key)), AUD)
        deadline = time.monotonic() + 10
        while len(mock.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(mock.calls) == 2


def test_jwks_fetch_refuses_redirects_and_oversized_documents(tmp_path, store, ec_key):
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL}])
    auth = JwtAuthenticator(settings_for(tmp_path, issuers), store)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(JWKS_URL, status=302, headers={"Location": "https://attacker.example.net/jwks"})
        mock.get("https://attacker.example.net/jwks", json={"keys": [public_jwk(ec_key, "ec-1")]})
        reject(auth, bearer(make_token(ec_key)), "no ES384 key")
        assert [c.request.url for c in mock.calls] == [JWKS_URL]

    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL}], name="i2.json")
    auth = JwtAuthenticator(settings_for(tmp_path, issuers, database=str(tmp_path / "db2.sqlite3")), store)
    padding = "x" * (600 * 1024)
    with responses.RequestsMock() as mock:
        mock.get(JWKS_URL, body=json.dumps({"keys": [public_jwk(ec_key, "ec-1")], "pad": padding}))
        reject(auth, bearer(make_token(ec_key)), "no ES384 key")


def test_symmetric_keys_in_a_fetched_jwks_are_ignored(tmp_path, store, ec_key):
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks_url": JWKS_URL}])
    auth = JwtAuthenticator(settings_for(tmp_path, issuers), store)
    secret = base64.urlsafe_b64encode(b"s" * 32).rstrip(b"=").decode()
    with responses.RequestsMock() as mock:
        mock.get(JWKS_URL, json={"keys": [{"kty": "oct", "kid": "ec-1", "k": secret},
                                          public_jwk(ec_key, "ec-good")]})
        reject(auth, bearer(jwt.encode({"iss": ISS}, b"s" * 32, algorithm="HS256", headers={"kid": "ec-1"})),
               "not accepted")
        reject(auth, bearer(make_token(ec_key, kid="ec-1")), "no ES384 key")
        assert auth.authenticate(bearer(make_token(ec_key, kid="ec-good")), AUD).kid == "ec-good"


def test_jwks_file_rotation_without_restart(tmp_path, store, ec_key, ec_key2):
    keys = tmp_path / "keys" / "ehr-jwks.json"
    keys.parent.mkdir()
    keys.write_text(json.dumps({"keys": [public_jwk(ec_key, "k1")]}))
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks_file": "keys/ehr-jwks.json"}])  # relative
    auth = JwtAuthenticator(settings_for(tmp_path, issuers), store)
    assert auth.authenticate(bearer(make_token(ec_key, kid="k1")), AUD).kid == "k1"
    reject(auth, bearer(make_token(ec_key2, kid="k2")), "no ES384 key with kid 'k2'")
    # Rotate: k1 replaced by k2 (the trailing newline changes the size even on coarse-mtime filesystems).
    keys.write_text(json.dumps({"keys": [public_jwk(ec_key2, "k2")]}) + "\n")
    assert auth.authenticate(bearer(make_token(ec_key2, kid="k2")), AUD).kid == "k2"
    reject(auth, bearer(make_token(ec_key, kid="k1")), "no ES384 key with kid 'k1'")  # revoked


# --- tenant, typ --------------------------------------------------------------------------------------
def test_tenant_allowlist(tmp_path, store, ec_key):
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks": {"keys": [public_jwk(ec_key, "ec-1")]},
                                        "tenants": ["hospital-a"]}])
    auth = JwtAuthenticator(settings_for(tmp_path, issuers), store)
    assert auth.authenticate(bearer(make_token(ec_key, tenant="hospital-a")), AUD).tenant == "hospital-a"
    reject(auth, bearer(make_token(ec_key, tenant="hospital-b")), "tenant 'hospital-b' not allowed")
    reject(auth, bearer(make_token(ec_key)), r"tenant \(none\) not allowed")


def test_typ_other_than_jwt_is_refused(static_auth, ec_key):
    reject(static_auth, bearer(make_token(ec_key, headers={"typ": "at+jwt"})), "typ")


# --- replay --------------------------------------------------------------------------------------------
def test_replayed_jti(static_auth, ec_key):
    token = make_token(ec_key, jti="once")
    assert static_auth.authenticate(bearer(token), AUD).jti == "once"
    reject(static_auth, bearer(token), "replayed jti 'once'")
    # A different token reusing the jti is a replay too.
    reject(static_auth, bearer(make_token(ec_key, jti="once")), "replayed jti")


def test_rejected_token_does_not_burn_its_jti(static_auth, ec_key, ec_key2):
    reject(static_auth, bearer(make_token(ec_key2, jti="precious")), "bad signature")
    reject(static_auth, bearer(make_token(ec_key, jti="precious", aud="https://elsewhere")), "aud")
    assert static_auth.authenticate(bearer(make_token(ec_key, jti="precious")), AUD).jti == "precious"


def test_missing_jti_is_refused(static_auth, ec_key):
    reject(static_auth, bearer(make_token(ec_key, drop=("jti",))), "lacks claim 'jti'")
    reject(static_auth, bearer(make_token(ec_key, jti="")), "jti")
    reject(static_auth, bearer(make_token(ec_key, jti=12345)), "jti must be")


def test_replay_across_two_stores_on_one_database(tmp_path, ec_key):
    """Two gunicorn workers = two Store objects (two connections) on the same SQLite file."""
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks": {"keys": [public_jwk(ec_key, "ec-1")]}}])
    settings = settings_for(tmp_path, issuers)
    store_a, store_b = Store(settings.database), Store(settings.database)
    try:
        worker_a, worker_b = JwtAuthenticator(settings, store_a), JwtAuthenticator(settings, store_b)
        token = make_token(ec_key, jti="shared")
        assert worker_a.authenticate(bearer(token), AUD).jti == "shared"
        reject(worker_b, bearer(token), "replayed")
    finally:
        store_a.close()
        store_b.close()


def _worker_authenticate(settings, token, start, results):
    store = Store(settings.database)
    auth = JwtAuthenticator(settings, store)
    start.wait(10)
    try:
        auth.authenticate(bearer(token), AUD)
        results.put("ok")
    except AuthenticationError as exc:
        results.put(str(exc))
    finally:
        store.close()


def test_replay_across_processes(tmp_path, ec_key):
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks": {"keys": [public_jwk(ec_key, "ec-1")]}}])
    settings = settings_for(tmp_path, issuers)
    Store(settings.database).close()  # create the schema once
    token = make_token(ec_key, jti="raced")
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker_authenticate, args=(settings, token, start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(30)
    assert outcomes.count("ok") == 1, outcomes
    assert all("replayed jti" in o for o in outcomes if o != "ok"), outcomes


# --- the header itself ------------------------------------------------------------------------------------
@pytest.mark.parametrize("header, match", [
    (None, "no Authorization header"),
    ("", "no Authorization header"),
    ("Basic dXNlcjpwYXNz", "not a Bearer token"),
    ("Bearer", "empty Bearer token"),
    ("Bearer ", "empty Bearer token"),
    ("Bearer not-a-jwt", "malformed"),
    ("Bearer a.b", "malformed"),
    ("Bearer a.b.c.d.e", "malformed"),
    ("Bearer !!!.???.***", "malformed"),
    ("Bearer eyJhbGciOiJFUzM4NCJ9.bm90LWpzb24.c2ln", "malformed|no kid"),
    ("Bearer " + "a" * 20000 + ".b.c", "too long"),
])
def test_missing_or_malformed_header(static_auth, header, match):
    reject(static_auth, header, match)


def test_malformed_payload_with_valid_header(static_auth):
    header = b64({"alg": "ES384", "typ": "JWT", "kid": "ec-1"})
    reject(static_auth, bearer(f"{header}.{base64.urlsafe_b64encode(b'[1,2]').rstrip(b'=').decode()}.c2ln"),
           "malformed")


def test_reason_never_contains_the_token(static_auth, ec_key2):
    token = make_token(ec_key2, kid="ec-1")
    exc = reject(static_auth, bearer(token), "bad signature")
    for part in token.split("."):
        assert part not in str(exc)


# --- the trusted-issuer file ---------------------------------------------------------------------------------
def _ec_jwks(ec_key, kid="ec-1"):
    return {"keys": [public_jwk(ec_key, kid)]}


@pytest.mark.parametrize("entry, match", [
    ({"iss": ISS}, "exactly one key source"),
    ({"iss": ISS, "jwks_url": JWKS_URL, "jwks": "EC"}, "exactly one key source"),
    ({"iss": ISS, "jwks_url": "http://ehr.example.org/jwks"}, "must use https"),
    ({"iss": ISS, "jwks_url": JWKS_URL, "jku": ["http://ehr.example.org/jwks"]}, "must use https"),
    ({"iss": ISS, "jwks_url": JWKS_URL, "jku": "https://ehr.example.org/jwks"}, "'jku' must be an array"),
    ({"iss": ISS, "jwks_url": JWKS_URL, "fhir_servers": ["http://fhir.example.org/fhir"]}, "must use https"),
    ({"iss": ISS, "jwks_url": JWKS_URL, "fhir_servers": ["https://169.254.169.254/fhir"]}, "refused address"),
    ({"iss": ISS, "jwks_url": JWKS_URL, "fhir_servers": ["https://u:p@fhir.example.org/"]}, "user information"),
    ({"iss": ISS, "jwks_url": JWKS_URL, "jwks_uri": JWKS_URL}, "unknown field"),
    ({"iss": "", "jwks_url": JWKS_URL}, "'iss' must be"),
    ({"iss": ISS, "jwks_file": "does-not-exist.json"}, "cannot be read"),
    ({"iss": ISS, "jwks": {"keys": [{"kty": "oct", "kid": "x", "k": "c2VjcmV0"}]}}, "symmetric"),
    ({"iss": ISS, "jwks": {"nokeys": []}}, "not a JWK Set"),
    ({"iss": ISS, "jwks_url": JWKS_URL, "tenants": []}, "at least one tenant"),
])
def test_issuer_file_errors(tmp_path, entry, match):
    path = write_issuers(tmp_path, [entry])
    with pytest.raises(ConfigError, match=match) as info:
        load_trusted_issuers(path)
    assert "PTSD_CDS_TRUSTED_ISSUERS" in str(info.value)


def test_issuer_file_refuses_private_and_weak_keys(tmp_path, ec_key):
    private = ECAlgorithm.to_jwk(ec_key, as_dict=True)
    private["kid"] = "oops"
    with pytest.raises(ConfigError, match="private-key members"):
        load_trusted_issuers(write_issuers(tmp_path, [{"iss": ISS, "jwks": {"keys": [private]}}]))
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigError, match="at least 2048"):
        load_trusted_issuers(write_issuers(tmp_path, [{"iss": ISS, "jwks": {"keys": [public_jwk(weak, "w")]}}],
                                           name="weak.json"))
    nokid = public_jwk(ec_key, "x")
    del nokid["kid"]
    with pytest.raises(ConfigError, match="kid"):
        load_trusted_issuers(write_issuers(tmp_path, [{"iss": ISS, "jwks": {"keys": [nokid]}}], name="nokid.json"))


def test_issuer_file_structure_errors(tmp_path, ec_key):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_trusted_issuers(bad)
    bad.write_text(json.dumps({"issuers": []}))
    with pytest.raises(ConfigError, match="no issuers"):
        load_trusted_issuers(bad)
    bad.write_text(json.dumps([]))
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_trusted_issuers(bad)
    dup = {"iss": ISS, "jwks": _ec_jwks(ec_key)}
    with pytest.raises(ConfigError, match="listed twice"):
        load_trusted_issuers(write_issuers(tmp_path, [dup, dup], name="dup.json"))


def test_relative_jwks_file_resolves_against_the_issuer_file(tmp_path, ec_key, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "keys.json").write_text(json.dumps(_ec_jwks(ec_key)))
    path = write_issuers(conf, [{"iss": ISS, "jwks_file": "keys.json"}])
    monkeypatch.chdir(tmp_path)  # not the issuer file's directory
    issuers = load_trusted_issuers(path)
    assert issuers[ISS].static_keys.lookup("ec-1", "ES384") is not None


def test_build_authenticator_picks_by_setting(tmp_path, store, ec_key):
    issuers = write_issuers(tmp_path, [{"iss": ISS, "jwks": _ec_jwks(ec_key)}])
    assert isinstance(build_authenticator(settings_for(tmp_path, issuers), store), JwtAuthenticator)
    off = Settings().with_overrides({"auth": "off"})
    assert isinstance(build_authenticator(off, store), NoAuthentication)


# --- the shipped development files ---------------------------------------------------------------------------
def test_dev_trusted_issuers_file_trusts_only_the_sandbox():
    issuers = load_trusted_issuers(DATA / "dev-trusted-issuers.json")
    assert list(issuers) == ["https://sandbox.cds-hooks.org"]
    sandbox = issuers["https://sandbox.cds-hooks.org"]
    assert sandbox.static_keys is not None  # no network needed in development
    assert sandbox.allows_jku("https://sandbox.cds-hooks.org/.well-known/jwks.json")
    assert not sandbox.allows_jku("https://sandbox.cds-hooks.org/other.json")
    assert sandbox.static_keys.lookup("44823f3d-0b01-4a6c-a80e-b9d3e8a7226f", "ES384") is not None
    assert all(u.startswith(("http://localhost:", "http://127.0.0.1:", "http://[::1]:", "https://"))
               for u in sandbox.fhir_servers)


def test_sandbox_jwks_copy_matches_the_reference():
    ref = SHARED / "cds-hooks" / "examples" / "cds-hooks-sandbox" / "sandbox-public-jwks.json"
    assert json.loads((DATA / "sandbox-jwks.json").read_text()) == json.loads(ref.read_text())


def test_sandbox_shaped_token_is_verified_with_the_dev_file_layout(tmp_path, store, ec_key):
    """Same header and claims as the sandbox (jku, no tenant, exp = iat + 300), own key."""
    data = tmp_path / "data"
    shutil.copytree(DATA, data, ignore=shutil.ignore_patterns("*.py"))
    kid = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
    (data / "sandbox-jwks.json").write_text(json.dumps({"keys": [public_jwk(ec_key, kid, "ES384")]}))
    settings = settings_for(tmp_path, data / "dev-trusted-issuers.json")
    auth = JwtAuthenticator(settings, store)
    aud = "http://localhost:5000/cds-services"
    token = make_token(ec_key, kid=kid, iss="https://sandbox.cds-hooks.org", aud=aud, lifetime=300,
                       iat=int(time.time()) + 1,
                       headers={"jku": "https://sandbox.cds-hooks.org/.well-known/jwks.json"})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        ident = auth.authenticate(bearer(token), aud)
        assert len(mock.calls) == 0
    assert ident.iss == "https://sandbox.cds-hooks.org" and ident.tenant is None
