"""The unverified read of a token (``jwt_auth._peek``, issue #7 item 4) agrees with PyJWT's.

``_peek`` reads the header and claims that pick the issuer and key without PyJWT's per-character
scan; for anything it does not read exactly as PyJWT would, it answers None and PyJWT's own
unverified read runs. These tests hold it to that: on every token ``bearer_token`` accepts,
``_peek`` is either None or equal to PyJWT's read, and None whenever PyJWT refuses the token.
"""

from __future__ import annotations

import base64
import json
import os

import jwt
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cds_service.auth import AuthenticationError
from cds_service.auth.jwt_auth import _bad_part, _peek, bearer_token

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def pyjwt_read(token: str):
    """What the authenticator read before ``_peek``: PyJWT's unverified decode, or its failure."""
    try:
        decoded = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return {"header": decoded["header"], "payload": decoded["payload"]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
header_members = st.fixed_dictionaries({}, optional={
    "alg": st.sampled_from(["ES384", "RS256", "none", 5]),
    "kid": st.sampled_from(["k1", "", 7, None]),
    "typ": st.sampled_from(["JWT", "jwt", "JOSE", 1]),
    "b64": st.booleans(),
    "crit": st.sampled_from([["b64"], [], ["x"], "b64"]),
    "jku": st.sampled_from(["https://ehr.example.org/jwks", 3]),
})
segment = st.one_of(
    header_members.map(lambda d: b64(json.dumps(d).encode())),          # a JSON object
    json_values.map(lambda v: b64(json.dumps(v).encode())),             # any JSON value
    st.binary(max_size=24).map(b64),                                    # any bytes
    st.text(alphabet=ALPHABET, max_size=12),                            # any alphabet text (4n+1, non-canonical)
    st.sampled_from(["", "bnVsbA", "e30", "e30x", "eyJhIjoxfQ", "eyJhIjoxfR", "W10", "IjEi", "77u_e30",
                     b64(b'{"a":NaN}'), b64(b'{"a":1,"a":2}'), b64("{\"k\":\"\u00e9\"}".encode("utf-16"))]),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segment, segment, segment)
def test_peek_reads_what_pyjwt_reads_or_defers_to_it(header, payload, signature):
    token = f"{header}.{payload}.{signature}"
    try:
        bearer_token("Bearer " + token)
    except AuthenticationError:
        return  # refused before any read
    peeked = _peek(token)
    expected = pyjwt_read(token)
    if expected is None:
        assert peeked is None
    elif peeked is not None:
        assert peeked == expected
        assert json.dumps(peeked, sort_keys=True) == json.dumps(expected, sort_keys=True)  # types too


def test_a_well_formed_token_is_read_without_pyjwt_and_as_pyjwt_reads_it():
    header = {"alg": "ES384", "typ": "JWT", "kid": "ec-1"}
    claims = {"iss": "https://ehr.example.org", "aud": "https://cds.example.org/x", "exp": 2, "iat": 1,
              "jti": "a-b"}
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(b'sig' * 32)}"
    assert _peek(token) == {"header": header, "payload": claims} == pyjwt_read(token)


@pytest.mark.parametrize("token", [
    "eyJhIjoxfR.e30.c2ln",             # non-canonical header encoding (PyJWT refuses it)
    "e30.e30.c2lnx",                    # a signature of 4n+1 characters
    "e30.W10.c2ln",                     # claims not an object
    "WzFd.e30.c2ln",                    # header not an object
    b64(b'{"kid":5}') + ".e30.c2ln",    # a kid that is not a string
    b64(b'{"b64":false,"crit":["b64"]}') + ".e30.c2ln",  # detached payload
])
def test_unusual_tokens_go_to_pyjwt_and_get_its_reason(token):
    """Each falls back (None); the reason the authenticator then gives is PyJWT's, as before."""
    assert _peek(token) is None
    if pyjwt_read(token) is None:
        assert _bad_part(token) in ("header", "payload")
