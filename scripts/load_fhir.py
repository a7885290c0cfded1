#!/usr/bin/env python3
"""Load transaction Bundles into a FHIR server: ``python load_fhir.py BASE_URL FOLDER``.

Used by ``docker compose --profile fhir`` (the ``hapi-load`` service, with fixtures/hapi/) and
by hand (``python scripts/load_fhir.py http://localhost:8090/fhir fixtures/hapi``). Standard
library only, so it runs in a plain ``python`` image. Waits for the server's ``/metadata``
(HAPI takes a minute to start), then POSTs each ``*.json`` Bundle to the base URL; exits 1 with
one line per failure.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

FHIR_JSON = "application/fhir+json"


def wait_for(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/metadata", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"load_fhir: {base}/metadata did not answer within {timeout:.0f} s")
        time.sleep(2)


def post(base: str, bundle: bytes) -> int:
    req = urllib.request.Request(base, data=bundle, method="POST",
                                 headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: load_fhir.py BASE_URL FOLDER [WAIT_SECONDS]", file=sys.stderr)
        return 2
    base, folder = argv[0].rstrip("/"), Path(argv[1])
    wait_for(base, float(argv[2]) if len(argv) == 3 else 300)
    failures = 0
    for path in sorted(folder.glob("*.json")):
        data = path.read_bytes()
        json.loads(data)  # a broken file is a local error, not the server's
        status = post(base, data)
        if status == 200:
            print(f"loaded {path.name}")
        else:
            failures += 1
            print(f"load_fhir: {path.name}: HTTP {status}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
