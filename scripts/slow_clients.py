#!/usr/bin/env python3
"""Slow and idle HTTP clients against a local ptsd-cds, and hook-call latency alongside them.

Reproduces finding 1 of issue #11 and measures worker models (docs/RELIABILITY.md):

    python scripts/slow_clients.py --url http://127.0.0.1:8080 --slow 50 --seconds 20

Slow clients (each a thread with one socket; a closed connection is reopened, as an attacker does):
  * header  - request line, then one header byte every ``--interval`` seconds
  * body    - full headers with Content-Length: 100000, then one body byte every interval
  * idle    - one byte, then nothing
Only loopback targets are accepted; every loop ends after ``--seconds``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parents[1]
SMALL_REQUEST = ROOT / "fixtures" / "requests" / "ptsd-benzo-therapy.patient-view.json"
MODES = ("header", "body", "idle")


def _loopback(host: str) -> str:
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing non-loopback target {host!r}")
    return host


class SlowClients:
    """``n`` slow connections spread over MODES, until ``stop()`` or ``seconds`` pass."""

    def __init__(self, host: str, port: int, n: int, *, interval: float = 3.0, seconds: float = 60.0,
                 modes: tuple[str, ...] = MODES, path: str = "/cds-services/ptsd-patient-view"):
        self.host, self.port, self.n = _loopback(host), port, n
        self.interval, self.seconds, self.modes, self.path = interval, seconds, modes, path
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.opened = 0
        self.closed_by_server = 0
        self.answers: dict[str, int] = {}  # first status line word seen on a closed connection

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        with self.lock:
            self.opened += 1
        return sock

    def _run(self, mode: str) -> None:
        end = time.monotonic() + self.seconds
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                sock = self._connect()
            except OSError:
                self._stop.wait(0.2)
                continue
            try:
                self._trickle(sock, mode, end)
            except (ConnectionResetError, BrokenPipeError):
                self._closed("reset")
            except OSError:
                pass
            finally:
                sock.close()

    def _trickle(self, sock: socket.socket, mode: str, end: float) -> None:
        head = f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        if mode == "header":
            sock.sendall(head.encode())
            filler = b"X-Slow: " + b"a" * 10_000
        elif mode == "body":
            sock.sendall((head + "Content-Length: 100000\r\n\r\n").encode())
            filler = b" " * 100_000
        else:
            sock.sendall(b"P")
            filler = b""
        sock.settimeout(self.interval)
        i = 0
        while not self._stop.is_set() and time.monotonic() < end:
            if filler and i < len(filler):
                sock.sendall(filler[i:i + 1])
                i += 1
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            # The server answered (e.g. 408) or closed: count it and reconnect.
            word = data.split(b" ", 2)[1].decode(errors="replace") if data.startswith(b"HTTP/") else "closed"
            self._closed(word)
            return

    def _closed(self, how: str) -> None:
        with self.lock:
            self.closed_by_server += 1
            self.answers[how] = self.answers.get(how, 0) + 1

    def start(self) -> "SlowClients":
        for i in range(self.n):
            t = threading.Thread(target=self._run, args=(self.modes[i % len(self.modes)],), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.interval + 6)

    def summary(self) -> dict:
        with self.lock:
            return {"slow_clients": self.n, "connections_opened": self.opened,
                    "closed_by_server": self.closed_by_server, "answers": dict(self.answers)}


def hook_latencies(url: str, n: int, *, body: bytes | None = None, timeout: float = 10.0,
                   pause: float = 0.0) -> dict:
    """``n`` sequential small patient-view calls: latency figures and failures."""
    body = body or SMALL_REQUEST.read_bytes()
    times: list[float] = []
    failures = 0
    session = requests.Session()
    for _ in range(n):
        t0 = time.monotonic()
        try:
            resp = session.post(url + "/cds-services/ptsd-patient-view", data=body, timeout=timeout,
                                headers={"Content-Type": "application/json"})
            ok = resp.status_code == 200 and "cards" in resp.json()
        except (requests.RequestException, ValueError):
            ok = False
        elapsed = time.monotonic() - t0
        if ok:
            times.append(elapsed)
        else:
            failures += 1
        if pause:
            time.sleep(pause)
    return {"calls": n, "failures": failures, **percentiles(times)}


def percentiles(times: list[float]) -> dict:
    if not times:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None}
    s = sorted(times)
    return {"p50_ms": round(1000 * statistics.median(s), 1),
            "p95_ms": round(1000 * s[min(len(s) - 1, int(0.95 * len(s)))], 1),
            "max_ms": round(1000 * s[-1], 1)}


def throughput(url: str, seconds: float, concurrency: int = 4) -> dict:
    """Small patient-view calls per second with ``concurrency`` keep-alive clients."""
    body = SMALL_REQUEST.read_bytes()
    end = time.monotonic() + seconds
    counts = [0] * concurrency
    errors = [0] * concurrency

    def loop(i: int) -> None:
        session = requests.Session()
        while time.monotonic() < end:
            try:
                r = session.post(url + "/cds-services/ptsd-patient-view", data=body, timeout=10,
                                 headers={"Content-Type": "application/json"})
                if r.status_code == 200:
                    counts[i] += 1
                else:
                    errors[i] += 1
            except requests.RequestException:
                errors[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests_per_s": round(sum(counts) / seconds, 1), "errors": sum(errors)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--slow", type=int, default=50, help="slow connections alongside")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--interval", type=float, default=3.0)
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the slow clients run")
    ap.add_argument("--calls", type=int, default=10, help="real hook calls measured meanwhile")
    ap.add_argument("--throughput", type=float, default=0.0, help="also measure N seconds of throughput")
    args = ap.parse_args(argv)
    parts = urlsplit(args.url)
    out: dict = {"url": args.url}
    if args.throughput:
        out["throughput_no_slow_clients"] = throughput(args.url, args.throughput)
    slow = SlowClients(parts.hostname, parts.port or 80, args.slow, interval=args.interval,
                       seconds=args.seconds, modes=tuple(args.modes.split(","))).start()
    time.sleep(min(5.0, args.seconds / 3))  # let them take hold
    out["hook_calls_with_slow_clients"] = hook_latencies(args.url, args.calls, pause=0.2)
    slow.stop()
    out.update(slow.summary())
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
