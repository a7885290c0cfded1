"""Processes of ``make bench``: gunicorn servers, the test issuer and its tokens, wrk, PostgreSQL.

Hand-written glue around real tools (gunicorn, wrk, initdb/pg_ctl): no library starts these
for us the way the bench needs (own gunicorn conf, per-worker /proc readings, a throw-away
cluster as an unprivileged user).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LUA = Path(__file__).with_name("wrk.lua")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class BenchError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_debian_package(command: str, package: str) -> str | None:
    """Path of ``command``; installs ``package`` with apt-get when missing and we are root."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    print(f"[bench] {command} not found: apt-get install -y {package}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=False, env=env, stdout=subprocess.DEVNULL)
    return shutil.which(command)


# --- the test issuer -------------------------------------------------------------------------
class TestIssuer:
    """An EC P-384 key made at start; a trusted-issuer file with its public JWK inline; tokens."""

    iss = "https://bench-ehr.ptsd-cds.invalid"

    def __init__(self, workdir: Path, fhir_servers: list[str]):
        import jwt  # noqa: PLC0415 (the project's own dependency, from .venv)
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

        self._jwt = jwt
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.kid = f"bench-{uuid.uuid4().hex[:8]}"
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": self.kid, "use": "sig", "alg": "ES384"})
        self.path = workdir / "trusted-issuers.json"
        self.path.write_text(json.dumps({"description": "make bench: throw-away test issuer", "issuers": [
            {"iss": self.iss, "jwks": {"keys": [public]}, "fhir_servers": fhir_servers}]}))

    def tokens(self, audience: str, count: int, lifetime: int = 3000) -> list[str]:
        now = int(time.time())
        return [self._jwt.encode({"iss": self.iss, "aud": audience, "iat": now, "exp": now + lifetime,
                                  "jti": uuid.uuid4().hex}, self.key, algorithm="ES384",
                                 headers={"kid": self.kid, "typ": "JWT"})
                for _ in range(count)]


# --- gunicorn ----------------------------------------------------------------------------------
class Server:
    """A gunicorn with the project's conf (``python:cds_service.gunicorn_conf``) on a free port;
    with ``production=True`` the way production runs: ``ptsd-cds serve``, nginx in front of that
    gunicorn (``PTSD_CDS_PROXY=nginx``; the workers measured are gunicorn's, never nginx's)."""

    def __init__(self, name: str, app_spec: str, env: dict[str, str], workdir: Path, production: bool = False):
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        self.env = {**os.environ, **env, "PTSD_CDS_BIND": f"127.0.0.1:{self.port}"}
        self.app_spec = app_spec
        self.production = production
        if production:
            self.env["PTSD_CDS_PROXY"] = "nginx"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "Server":
        log = self.log_path.open("ab")
        command = ([sys.executable, "-m", "cds_service.cli", "serve"] if self.production else
                   [sys.executable, "-m", "gunicorn", "-c", "python:cds_service.gunicorn_conf", self.app_spec])
        self.proc = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=log, stderr=log,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited at start (code {self.proc.returncode}): {self.log_tail()}")
            try:
                status, _ = request(self.base, "GET", "/healthz", timeout=2)
                if status == 200 and len(self.workers()) >= 1:
                    time.sleep(0.3)  # let every worker finish importing
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise BenchError(f"{self.name} did not answer /healthz in {timeout} s: {self.log_tail()}")

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def failures_since(self, offset: int) -> dict[str, int]:
        """Non-2xx access lines of the service log after ``offset``: {"401 replayed jti ...": count}."""
        counts: dict[str, int] = {}
        with self.log_path.open("rb") as f:
            f.seek(offset)
            for raw in f:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                status = line.get("status") if isinstance(line, dict) else None
                if isinstance(status, int) and not 200 <= status < 300:
                    why = line.get("auth_error") or line.get("error") or line.get("unavailable") or ""
                    key = f"{status} {str(why)[-160:]}".strip()
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def workers(self) -> list[int]:
        """gunicorn's worker processes (children of its arbiter that are not nginx)."""
        return [p for p in self._children() if _comm(p) != "nginx"]

    def _children(self) -> list[int]:
        assert self.proc is not None
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            return [int(c) for c in children]
        except OSError:
            out = []
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == pid:
                    out.append(int(stat.parent.name))
            return out

    def cpu_seconds(self) -> float:
        """User + system CPU of all workers so far (all their threads), in seconds."""
        total = 0
        for pid in self.workers():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / CLK_TCK

    def peak_rss_mb(self) -> dict[int, float]:
        """VmHWM (peak resident set) of each worker, MB."""
        out = {}
        for pid in self.workers():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        out[pid] = int(line.split()[1]) / 1024
            except OSError:
                pass
        return out

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def request(base: str, method: str, path: str, body: bytes | None = None, token: str | None = None,
            timeout: float = 120) -> tuple[int, bytes]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --- wrk -----------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    requests: int
    seconds: float
    non2xx: int
    errors: int  # socket errors and timeouts
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    tokens_reused: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "seconds": round(self.seconds, 2), "rps": round(self.rps, 2),
                "non2xx": self.non2xx, "errors": self.errors, "p50_ms": self.p50_ms, "p95_ms": self.p95_ms,
                "p99_ms": self.p99_ms, "tokens_reused": self.tokens_reused}


def run_wrk(wrk: str, url: str, *, method: str, body_file: Path | None, token_file: Path | None,
            limit: int, duration: float, connections: int, timeout: float = 60) -> LoadResult:
    """One wrk run: stops after ``limit`` responses (or ``duration`` seconds, whichever is first)."""
    done_file = Path(tempfile.mkstemp(prefix="wrk-done-")[1])
    done_file.unlink()
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, int(round(duration)))}s", f"--timeout={int(timeout)}s",
           "-s", str(LUA), url, "--", method, str(body_file or "-"), str(token_file or "-"), str(limit),
           str(done_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + duration + timeout + 60
    while proc.poll() is None:
        if done_file.exists():
            proc.send_signal(signal.SIGINT)  # wrk stops its threads and reports
            break
        if time.monotonic() > deadline:
            proc.kill()
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=60)
    done_file.unlink(missing_ok=True)
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise BenchError(f"wrk gave no result (exit {proc.returncode}): {stdout[-300:]} {stderr[-300:]}")
    d = json.loads(line.removeprefix("BENCHJSON "))
    done = d["responses"]  # counted by the script up to the limit (wrk's own count may add in-flight ones)

    def ms(key: str) -> float | None:
        return round(d[key] / 1000, 2) if done else None

    return LoadResult(requests=done, seconds=(d["span_us"] or d["duration_us"]) / 1e6, non2xx=d["non2xx"],
                      errors=d["err_connect"] + d["err_read"] + d["err_write"] + d["err_timeout"],
                      p50_ms=ms("p50_us"), p95_ms=ms("p95_us"), p99_ms=ms("p99_us"),
                      tokens_reused=d["tokens_reused"])


# --- PostgreSQL ------------------------------------------------------------------------------------
def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    return str(candidates[0]) if candidates else None


def pg_binaries() -> bool:
    return bool(_pg_bin("initdb") and _pg_bin("pg_ctl"))


class TempPostgres:
    """A throw-away cluster in a temp folder, run as an unprivileged user, on a loopback port."""

    def __init__(self):
        # Not under the bench's own (root-only) folder: the cluster's user must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="ptsd-cds-bench-pg-"))
        self.port = free_port()
        self.user = "postgres"
        self.run_as: list[str] = []
        self.started = False

    def start(self) -> str:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (initdb and pg_ctl):
            ensure_debian_package("pg_ctl", "postgresql")  # Debian puts it under /usr/lib/postgresql/*/bin
            initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (initdb and pg_ctl):
            raise BenchError("no PostgreSQL server binaries (initdb, pg_ctl); install Debian's postgresql")
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as nobody
            shutil.chown(self.dir, "nobody", "nogroup")
            self.run_as = ["runuser", "-u", "nobody", "--"]
        self.pg_ctl = pg_ctl
        data = self.dir / "data"
        subprocess.run([*self.run_as, initdb, "-D", str(data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, cwd=self.dir)
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=on -c max_connections=50"
        subprocess.run([*self.run_as, pg_ctl, "-D", str(data), "-l", str(self.dir / "server.log"), "-o", opts,
                        "-w", "-t", "30", "start"], check=True, capture_output=True, cwd=self.dir)
        self.started = True
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.started:
            subprocess.run([*self.run_as, self.pg_ctl, "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"],
                           capture_output=True, cwd=self.dir)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
