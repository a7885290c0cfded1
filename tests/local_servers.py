"""Real local stand-ins for the tests: a loopback HTTP server speaking FHIR JSON, and a store made
really unusable (no mock stands in for the failing part)."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FhirJsonHandler(BaseHTTPRequestHandler):
    """Base handler: ``send_json(status, body)`` answers FHIR JSON; no request logging."""

    def send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextmanager
def local_fhir_server(handler: type[BaseHTTPRequestHandler]):
    """Serve ``handler`` on 127.0.0.1 (a free port) in a thread; yields the ``.../fhir`` base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()


def break_store(app) -> Path:
    """Make the app's SQLite store unusable: close it and put a directory where its file was."""
    store = app.extensions["ptsd_cds"].store
    store.close()
    path = Path(store.path)
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.mkdir()
    return path
