"""A local FHIR server for the bench's no-prefetch row: answers every search after a fixed delay.

``python scripts/bench/fhir_server.py --port P --delay 0.05 --shape history --size 20``
serves ``/fhir/Patient/<id>``, ``/fhir/Condition?patient=``, ``/fhir/MedicationRequest?patient=``
and ``/fhir/Procedure?patient=`` from a generated record (scripts/bench/records.py), each answer
after ``--delay`` seconds (a threaded server: concurrent queries wait concurrently). Loopback only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.bench import records  # noqa: E402


def make_handler(answers: dict[str, bytes], delay: float):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            path = urlsplit(self.path).path
            parts = [p for p in path.split("/") if p]
            key = parts[1] if len(parts) >= 2 and parts[0] == "fhir" else ""
            body = answers.get(key)
            time.sleep(delay)
            if body is None:
                self.send_response(404)
                body = b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}'
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # quiet
            pass

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog (5) drops connections when 4 hook calls x 4 queries arrive at
    # once: the SYN retry (1 s) would be charged to the service.
    request_queue_size = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--shape", default="history", choices=records.SHAPES)
    parser.add_argument("--size", type=int, default=20)
    args = parser.parse_args()
    conditions, medications, procedures = records.record(args.shape, args.size)
    answers = {name: json.dumps(doc).encode() for name, doc in {
        "Patient": records.patient(),
        "Condition": records.searchset(conditions),
        "MedicationRequest": records.searchset(medications),
        "Procedure": records.searchset(procedures),
    }.items()}
    server = Server(("127.0.0.1", args.port), make_handler(answers, args.delay))
    server.serve_forever()


if __name__ == "__main__":
    main()
