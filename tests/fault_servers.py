"""Real local HTTP servers that misbehave on purpose (issue #11 fault tests).

A threaded stdlib server on 127.0.0.1 whose behaviour is chosen by the first path segment:
``http://127.0.0.1:PORT/<mode>/fhir/...``. Every sleep or trickle waits on ``stop`` so the
server shuts down promptly; every loop is bounded in time.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

TRICKLE_INTERVAL = 0.25
TRICKLE_FOR = 15.0  # seconds a trickle goes on at most (far past every budget in the tests)


def bundle(resources=(), next_url=None) -> dict:
    out = {"resourceType": "Bundle", "type": "searchset",
           "entry": [{"resource": r} for r in resources]}
    if next_url:
        out["link"] = [{"relation": "next", "url": next_url}]
    return out


class FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "FaultServer"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, doc, status: int = 200, headers=None) -> None:
        self._send(status, json.dumps(doc).encode(), headers)

    def _trickle(self, data: bytes) -> None:
        end = time.monotonic() + TRICKLE_FOR
        for i in range(len(data)):
            if self.server.stop.wait(TRICKLE_INTERVAL) or time.monotonic() > end:
                return
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.server.hits.append(self.path)
        parts = urlsplit(self.path)
        mode = parts.path.strip("/").split("/", 1)[0]
        handler = getattr(self, "mode_" + mode.replace("-", "_"), None)
        try:
            if handler is None:
                self._json({"resourceType": "OperationOutcome"}, 404)
            else:
                handler(parts)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # --- behaviours ------------------------------------------------------------------------
    def _ok_resource(self, parts) -> dict:
        if "/Patient/" in parts.path:
            return {"resourceType": "Patient", "id": parts.path.rsplit("/", 1)[-1]}
        return bundle()

    def mode_ok(self, parts) -> None:
        self._json(self._ok_resource(parts))

    def mode_slow_ok(self, parts) -> None:
        """A correct answer after ``server.slow_ok_delay`` seconds (an in-flight call to drain)."""
        self.server.stop.wait(self.server.slow_ok_delay)
        self.mode_ok(parts)

    def mode_slow_first_byte(self, parts) -> None:
        self.server.stop.wait(TRICKLE_FOR)
        self.mode_ok(parts)

    def mode_header_trickle(self, parts) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        self.wfile.flush()
        self._trickle(b"X-Padding: " + b"a" * 1000 + b"\r\n\r\n")
        self.close_connection = True

    def mode_body_trickle(self, parts) -> None:
        body = json.dumps(self._ok_resource(parts)).encode() + b" " * 100_000
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._trickle(body)
        self.close_connection = True

    def _status(self, status: int, headers=None) -> None:
        self._json({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing", "diagnostics": "fault server"}]}, status, headers)

    def mode_401(self, parts) -> None:
        self._status(401, {"WWW-Authenticate": "Bearer"})

    def mode_403(self, parts) -> None:
        self._status(403)

    def mode_404(self, parts) -> None:
        self._status(404)

    def mode_429(self, parts) -> None:
        self._status(429, {"Retry-After": "120"})

    def mode_500(self, parts) -> None:
        self._status(500)

    def mode_503(self, parts) -> None:
        self._status(503, {"Retry-After": "30"})

    def mode_invalid_json(self, parts) -> None:
        self._send(200, b'{"resourceType": "Bundle", "entry": [')

    def mode_not_a_bundle(self, parts) -> None:
        if "/Patient/" in parts.path:
            return self.mode_ok(parts)
        self._json({"resourceType": "Patient", "id": "not-a-bundle"})

    def mode_next_loop(self, parts) -> None:
        if "/Patient/" in parts.path:
            return self.mode_ok(parts)
        self._json(bundle(next_url=f"http://127.0.0.1:{self.server.port}{self.path}"))

    def mode_next_offhost(self, parts) -> None:
        if "/Patient/" in parts.path:
            return self.mode_ok(parts)
        self._json(bundle(next_url="http://other.example.org/fhir/Condition?page=2"))

    def mode_big_pages(self, parts) -> None:
        """Endless pages of ~100 KB, each with a next link (for the per-call total caps)."""
        if "/Patient/" in parts.path:
            return self.mode_ok(parts)
        page = int(dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("page", "0"))
        base = parts.path
        resources = [{"resourceType": "Observation", "id": f"o{page}-{i}", "status": "final",
                      "note": [{"text": "x" * 900}]} for i in range(100)]
        self._json(bundle(resources, next_url=f"http://127.0.0.1:{self.server.port}{base}?page={page + 1}"))


    def mode_jwks(self, parts) -> None:
        """The JWKS at /jwks/...: ``server.jwks_doc``, or trickled headers when ``jwks_trickle``."""
        if self.server.jwks_trickle.is_set():
            return self.mode_header_trickle(parts)
        self._json(self.server.jwks_doc)


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many concurrent queries: no SYN dropped by a short backlog

    def __init__(self, tls: tuple[Path, Path] | None = None):
        super().__init__(("127.0.0.1", 0), FaultHandler)
        self.stop = threading.Event()
        self.hits: list[str] = []
        self.jwks_doc: dict = {"keys": []}
        self.jwks_trickle = threading.Event()
        self.slow_ok_delay = 1.5
        self.port = self.server_address[1]
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def start(self) -> "FaultServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.shutdown()
        self.server_close()

    def base(self, mode: str, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}/{mode}/fhir"


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 and localhost (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
