"""Outbound calls to a client's fhirServer (issue #4): allow-list, addresses, redirects, token, size.

FHIR servers are faked with `responses` (which replaces HTTPAdapter.send, so no socket is
opened) and host names are resolved by an injected resolver, so `fhir.example.org` is a public
test address (203.0.113.10, TEST-NET-3) or, for the metadata tests, 169.254.169.254. A few tests
use a real local socket server to exercise the guarded connection itself (DNS pinning).
"""

from __future__ import annotations

import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import responses

from cds_service.auth import ANONYMOUS, ClientIdentity
from cds_service.config import ConfigError, Settings
from cds_service.patient_data.outbound import (
    FhirAddressRefused,
    FhirFetchError,
    FhirServerRefused,
    GuardedAdapter,
    OutboundPolicy,
    same_origin,
    static_resolver,
)

BASE = "https://fhir.example.org/fhir"
PUBLIC_IP = "203.0.113.10"
TOKEN = "secret-access-token-123"
TIMEOUT = (1.0, 2.0)
CLIENT = ClientIdentity(iss="https://ehr.example.org", fhir_servers=(BASE,))

pytestmark = pytest.mark.spec("SEC-01 FA-02 FA-03 PF-14")


def make_settings(**overrides) -> Settings:
    return Settings().with_overrides({"auth": "off", **overrides})


def policy(table=None, **overrides) -> OutboundPolicy:
    table = {"fhir.example.org": PUBLIC_IP, "other.example.org": "203.0.113.20"} if table is None else table
    return OutboundPolicy(make_settings(**overrides), resolver=static_resolver(table))


def fetch(pol, url, *, base=BASE, token=TOKEN, session=None):
    return pol.get_json(session or requests.Session(), url, base=base, token=token, timeout=TIMEOUT)


# --- which servers -------------------------------------------------------------------------------
@pytest.mark.parametrize("server", [
    BASE,
    BASE + "/",
    BASE + "/R4",
    "https://fhir.example.org:443/fhir",
    "https://FHIR.example.org/fhir/R4/",
])
def test_allowed_fhir_servers(server):
    policy().check_fhir_server(server, CLIENT)


@pytest.mark.parametrize("server", [
    "https://fhir.example.org/fhirX",  # path prefix without a segment boundary
    "https://fhir.example.org/",  # above the allowed base
    "https://fhir.example.org/other",
    "https://fhir.example.org.evil.com/fhir",  # host suffix trick
    "https://evilfhir.example.org/fhir",
    "https://fhir.example.org:8443/fhir",  # another port
    "http://fhir.example.org/fhir",  # plain http to a non-loopback host
    "https://fhir.example.org@evil.com/fhir",  # userinfo trick
    "https://evil.com@fhir.example.org/fhir",  # userinfo at all
    "https://fhir.example.org/fhir/../admin",  # dot segments
    "https://fhir.example.org/fhir/%2e%2e/admin",
    "https://fhir.example.org/fhir%2fadmin",
    "https://fhir.example.org/fhir?x=1",
    "https://fhir.example.org/fhir#x",
    "ftp://fhir.example.org/fhir",
    "fhir.example.org/fhir",
    "https://169.254.169.254/latest/meta-data",
    "http://localhost:8080/fhir",  # loopback is not allowed for an authenticated caller unless listed
    "",
])
def test_refused_fhir_servers(server):
    with pytest.raises(FhirServerRefused):
        policy().check_fhir_server(server, CLIENT)


def test_server_allowed_for_one_issuer_is_refused_for_another():
    other = ClientIdentity(iss="https://other-ehr.example.net", fhir_servers=("https://other.example.org/fhir",))
    policy().check_fhir_server("https://other.example.org/fhir", other)
    with pytest.raises(FhirServerRefused):
        policy().check_fhir_server(BASE, other)


def test_settings_fhir_servers_apply_to_every_caller():
    pol = policy(fhir_servers="https://shared.example.org/fhir")
    pol.check_fhir_server("https://shared.example.org/fhir/R4", CLIENT)
    pol.check_fhir_server("https://shared.example.org/fhir", ANONYMOUS)
    with pytest.raises(FhirServerRefused):
        pol.check_fhir_server("https://shared.example.org/fhirish", CLIENT)


def test_bad_settings_fhir_servers_are_a_config_error():
    with pytest.raises(ConfigError, match="FHIR_SERVERS"):
        OutboundPolicy(make_settings(fhir_servers="http://fhir.example.org/fhir"))


@pytest.mark.parametrize("server", [
    "http://localhost:8080/fhir", "http://127.0.0.1:9999", "http://[::1]:8080/fhir", "https://localhost/fhir",
])
def test_anonymous_callers_may_use_loopback(server):
    policy().check_fhir_server(server, ANONYMOUS)


@pytest.mark.parametrize("server", [BASE, "https://203.0.113.10/fhir", "http://10.0.0.5/fhir"])
def test_anonymous_callers_may_not_use_other_servers(server):
    with pytest.raises(FhirServerRefused):
        policy().check_fhir_server(server, ANONYMOUS)


def test_loopback_for_an_issuer_only_when_listed():
    dev = ClientIdentity(iss="https://sandbox.cds-hooks.org", fhir_servers=("http://localhost:8080",))
    policy().check_fhir_server("http://localhost:8080/fhir", dev)
    with pytest.raises(FhirServerRefused):
        policy().check_fhir_server("http://localhost:9090/fhir", dev)


def test_check_fhir_server_does_no_io():
    def exploding_resolver(*args, **kwargs):
        raise AssertionError("check_fhir_server must not resolve names")

    OutboundPolicy(make_settings(), resolver=exploding_resolver).check_fhir_server(BASE, CLIENT)


# --- fetching with `responses` ----------------------------------------------------------------------
def test_fetch_sends_token_to_the_fhir_server():
    with responses.RequestsMock() as mock:
        mock.get(BASE + "/Patient/1", json={"resourceType": "Patient", "id": "1"})
        assert fetch(policy(), BASE + "/Patient/1") == {"resourceType": "Patient", "id": "1"}
        assert mock.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_fetch_without_token_sends_no_authorization():
    with responses.RequestsMock() as mock:
        mock.get(BASE + "/Patient/1", json={"resourceType": "Patient"})
        fetch(policy(), BASE + "/Patient/1", token=None)
        assert "Authorization" not in mock.calls[0].request.headers


def test_same_origin_next_link_keeps_the_token():
    with responses.RequestsMock() as mock:
        mock.get(BASE + "?_getpages=abc&_page=2", json={"resourceType": "Bundle"})
        fetch(policy(), BASE + "?_getpages=abc&_page=2")
        assert mock.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("next_url", [
    "https://other.example.org/fhir/Observation?page=2",  # another host
    "https://fhir.example.org:8443/fhir/Observation?page=2",  # another port
    "https://fhir.example.org.evil.com/fhir/Observation?page=2",
    "https://fhir.example.org/admin/Observation?page=2",  # same host, outside fhirServer
])
def test_next_link_elsewhere_is_not_followed_and_gets_no_token(next_url):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(next_url, json={"resourceType": "Bundle"})
        with pytest.raises(FhirFetchError, match="outside fhirServer"):
            fetch(policy(), next_url)
        assert not any("Authorization" in c.request.headers for c in mock.calls)
        assert len(mock.calls) == 0


def test_token_is_sent_only_to_the_base_origin():
    # Defence in depth behind the "outside fhirServer" refusal.
    assert same_origin("https://fhir.example.org:443/fhir/x", BASE)
    assert not same_origin("http://fhir.example.org/fhir/x", BASE)
    assert not same_origin("https://fhir.example.org.evil.com/fhir", BASE)


def test_redirect_to_another_host_is_not_followed():
    evil = "https://other.example.org/steal"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(BASE + "/Patient/1", status=302, headers={"Location": evil})
        mock.get(evil, json={"resourceType": "Patient"})
        with pytest.raises(FhirFetchError, match="redirect"):
            fetch(policy(), BASE + "/Patient/1")
        assert [c.request.url for c in mock.calls] == [BASE + "/Patient/1"]


def test_redirect_on_the_same_host_is_not_followed_either():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(BASE + "/Patient/1", status=307, headers={"Location": BASE + "/Patient/2"})
        mock.get(BASE + "/Patient/2", json={"resourceType": "Patient"})
        with pytest.raises(FhirFetchError, match="redirect"):
            fetch(policy(), BASE + "/Patient/1")
        assert len(mock.calls) == 1


@pytest.mark.parametrize("answers", [
    ["169.254.169.254"],  # cloud metadata
    ["203.0.113.10", "169.254.169.254"],  # one bad answer is enough
    ["::ffff:169.254.169.254"],  # IPv4-mapped
    ["64:ff9b::a9fe:a9fe"],  # NAT64 form of 169.254.169.254
    ["2002:a9fe:a9fe::1"],  # 6to4 form of 169.254.169.254
    ["fd00:ec2::254"],  # AWS IPv6 metadata
    ["fe80::1"],
    ["100.100.100.200"],  # Alibaba metadata
    ["0.0.0.0"],
    ["224.0.0.1"],
    ["255.255.255.255"],
    ["127.0.0.1"],  # a public name must not lead to this host
    ["::1"],
])
def test_refused_addresses(answers):
    pol = policy({"fhir.example.org": answers})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(BASE + "/Patient/1", json={"resourceType": "Patient"})
        with pytest.raises(FhirAddressRefused):
            fetch(pol, BASE + "/Patient/1")
        assert len(mock.calls) == 0


@pytest.mark.parametrize("address", ["10.1.2.3", "172.16.5.4", "192.168.1.20", "fd12:3456::1", "100.64.1.1",
                                     "2001:db8::10", "::ffff:203.0.113.10"])
def test_private_addresses_are_allowed(address):
    # Hospital FHIR servers live on private networks; only the allow-list protects them.
    pol = policy({"fhir.example.org": address})
    with responses.RequestsMock() as mock:
        mock.get(BASE + "/Patient/1", json={"resourceType": "Patient"})
        assert fetch(pol, BASE + "/Patient/1")["resourceType"] == "Patient"


def test_unresolvable_host_is_a_fetch_error():
    with pytest.raises(FhirFetchError, match="does not resolve"):
        fetch(policy({}), BASE + "/Patient/1")


def test_plain_http_to_a_non_loopback_host_is_refused():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get("http://fhir.example.org/fhir/Patient/1", json={"resourceType": "Patient"})
        with pytest.raises(FhirFetchError, match="https"):
            fetch(policy(), "http://fhir.example.org/fhir/Patient/1", base="http://fhir.example.org/fhir")
        assert len(mock.calls) == 0
    with pytest.raises(FhirServerRefused, match="https"):
        policy().check_fhir_server("http://fhir.example.org/fhir", CLIENT)
    with pytest.raises(FhirServerRefused):  # even if an identity somehow lists it
        policy().check_fhir_server("http://fhir.example.org/fhir",
                                   ClientIdentity(iss="x", fhir_servers=("http://fhir.example.org/fhir",)))


def test_oversized_response_declared():
    with responses.RequestsMock() as mock:
        mock.get(BASE + "/Patient/1", body=b"{" + b" " * 5000 + b"}",
                 headers={"Content-Length": "5002"}, content_type="application/fhir+json")
        with pytest.raises(FhirFetchError, match="too large"):
            fetch(policy(fhir_max_response=1000), BASE + "/Patient/1")


class EndlessBody(io.RawIOBase):
    """A response body that never ends; counts what was read."""

    def __init__(self):
        self.served = 0

    def readable(self):
        return True

    def readinto(self, b):
        n = len(b)
        b[:n] = b" " * n
        self.served += n
        return n


def test_oversized_response_streamed_stops_reading():
    endless = EndlessBody()
    with responses.RequestsMock() as mock:
        mock.get(BASE + "/Observation", body=io.BufferedReader(endless), content_type="application/fhir+json")
        with pytest.raises(FhirFetchError, match="too large"):
            fetch(policy(fhir_max_response=100_000), BASE + "/Observation")
    assert 100_000 < endless.served < 100_000 + 4 * OutboundPolicy.CHUNK


@pytest.mark.parametrize("status", [401, 403, 404, 500])
def test_http_errors_do_not_reveal_the_token(status):
    with responses.RequestsMock() as mock:
        mock.get(BASE + "/Patient/1", status=status, body=f"echo {TOKEN}")
        with pytest.raises(FhirFetchError) as info:
            fetch(policy(), BASE + "/Patient/1")
    assert str(status) in str(info.value) and info.value.status == status
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\"x\""])
def test_non_resource_answers(body):
    with responses.RequestsMock() as mock:
        mock.get(BASE + "/Patient/1", body=body)
        with pytest.raises(FhirFetchError):
            fetch(policy(), BASE + "/Patient/1")


def test_get_json_mounts_the_guarded_adapter_on_any_session():
    session = requests.Session()
    with responses.RequestsMock() as mock:
        mock.get(BASE + "/Patient/1", json={"resourceType": "Patient"})
        fetch(policy(), BASE + "/Patient/1", session=session)
    assert isinstance(session.get_adapter(BASE), GuardedAdapter)
    assert isinstance(policy().new_session().get_adapter("http://localhost/"), GuardedAdapter)


# --- real sockets: the guarded connection itself ------------------------------------------------------
class _Recorder(BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/fhir/redirect"):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/fhir/endless"):
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.end_headers()
            try:
                for _ in range(10_000):
                    self.wfile.write(b" " * 65536)
            except OSError:
                pass
        else:
            body = b'{"resourceType": "Patient", "id": "local"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.fixture
def local_server():
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_real_connection_to_an_allowed_loopback_server(local_server, monkeypatch):
    port = local_server.server_address[1]
    base = f"http://localhost:{port}/fhir"
    # A configured proxy must not be used (it would bypass the address check).
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("NO_PROXY", "")
    pol = policy({"localhost": "127.0.0.1"})
    pol.check_fhir_server(base, ANONYMOUS)
    assert fetch(pol, base + "/Patient/1", base=base)["id"] == "local"
    assert _Recorder.seen == [("/fhir/Patient/1", f"Bearer {TOKEN}")]


def test_real_redirect_is_not_followed(local_server):
    base = f"http://127.0.0.1:{local_server.server_address[1]}/fhir"
    with pytest.raises(FhirFetchError, match="redirect"):
        fetch(policy(), base + "/redirect", base=base)
    assert [p for p, _ in _Recorder.seen] == ["/fhir/redirect"]


def test_real_endless_response_is_cut_off(local_server):
    base = f"http://127.0.0.1:{local_server.server_address[1]}/fhir"
    with pytest.raises(FhirFetchError, match="too large"):
        fetch(policy(fhir_max_response=200_000), base + "/endless", base=base)


class _Rebinding:
    """Resolves to a public address for the first lookup, then to loopback (DNS re-binding)."""

    def __init__(self, second):
        self.calls = 0
        self.second = second

    def __call__(self, host, port, *args, **kwargs):
        self.calls += 1
        ip = PUBLIC_IP if self.calls == 1 else self.second
        fam = socket.AF_INET
        return [(fam, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))]


def test_dns_rebinding_between_check_and_connect_is_refused(local_server):
    port = local_server.server_address[1]
    accepted = []
    original_get_request = local_server.get_request

    def counting_get_request():
        conn = original_get_request()
        accepted.append(conn)
        return conn

    local_server.get_request = counting_get_request
    rebinding = _Rebinding("127.0.0.1")
    pol = OutboundPolicy(make_settings(), resolver=rebinding)
    base = f"https://fhir.example.org:{port}/fhir"
    with pytest.raises(FhirAddressRefused):
        fetch(pol, base + "/Patient/1", base=base)
    assert rebinding.calls == 2  # early check, then the connection's own check
    assert accepted == [] and _Recorder.seen == []  # no connection was made to the re-bound address


def test_guarded_connection_connects_to_the_checked_address(local_server):
    """The connection does not resolve the name again itself: it dials what the policy returned."""
    port = local_server.server_address[1]
    seen_hosts = []

    def resolver(host, port_, *args, **kwargs):
        seen_hosts.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port_))]

    pol = OutboundPolicy(make_settings(), resolver=resolver)
    base = f"http://localhost:{port}/fhir"
    assert fetch(pol, base + "/Patient/9", base=base)["id"] == "local"
    assert seen_hosts == ["localhost", "localhost"]
