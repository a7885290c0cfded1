"""nginx in front of gunicorn: the production worker model (issue #11, docs/RELIABILITY.md).

gunicorn's gthread worker reads the request line, headers and body in a request thread with a
blocking socket and no overall deadline (gunicorn 27, ``workers/gthread.py``: ``handle`` ->
``next(conn.parser)``; the body is read by the app), so eight clients trickling bytes held all
eight threads (finding 1). nginx reads every request whole in its event loop, with bounded
header and body read times (408), and passes only complete requests to gunicorn, which then
listens on a loopback port chosen at start. Measured in docs/RELIABILITY.md.

``ptsd-cds serve`` uses this when ``PTSD_CDS_PROXY`` is ``nginx``, or ``auto`` (the default)
and an ``nginx`` binary is installed. The same template renders ``deploy/nginx/nginx.conf`` for
docker compose (two replicas). Hand-written: starting, watching and stopping one child
process; no library does that for a gunicorn arbiter.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("ptsd_cds.proxy")

TEMPLATE = Path(__file__).resolve().parent / "data" / "nginx.conf.template"


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def render(*, listen: str, upstreams: list[str], run_dir: str, max_body: int, header_timeout: float,
           body_timeout: float, worker_processes: str = "1", proxy_read_timeout: int = 35) -> str:
    """The nginx configuration for ``listen`` (``HOST:PORT``) in front of ``upstreams``."""
    values = {
        "listen": listen,
        "upstream_servers": "\n".join(f"        server {u} max_fails=1 fail_timeout=5s;" for u in upstreams),
        "run_dir": run_dir,
        "max_body": str(max_body),
        "header_timeout": f"{header_timeout:g}",
        "body_timeout": f"{body_timeout:g}",
        "worker_processes": worker_processes,
        "proxy_read_timeout": str(proxy_read_timeout),
    }
    text = TEMPLATE.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """nginx gets SIGTERM if ``ptsd-cds serve`` is killed (never an orphan holding the port)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class NginxProxy:
    """One nginx master process, restarted (with a back-off) if it exits."""

    def __init__(self, conf_text: str, run_dir: str, *, listen: str | None = None, binary: str | None = None):
        self.binary = binary or nginx_binary()
        if not self.binary:
            raise RuntimeError("nginx is not installed")
        self.run_dir = Path(run_dir)
        self.conf = self.run_dir / "nginx.conf"
        self.conf.write_text(conf_text, encoding="utf-8")
        self.listen = listen  # HOST:PORT that start() waits for
        self.proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def _args(self) -> list[str]:
        extra = "daemon off;" + (" user nobody nogroup;" if os.geteuid() == 0 else "")
        return [self.binary, "-e", "stderr", "-p", str(self.run_dir), "-c", str(self.conf), "-g", extra]

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            self._args(),
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)

    def start(self, wait: float = 10.0) -> None:
        check = subprocess.run(self._args() + ["-t", "-q"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"nginx configuration refused: {check.stderr.strip()[-500:]}")
        pid_file = self.run_dir / "nginx.pid"
        pid_file.unlink(missing_ok=True)  # `nginx -t` leaves an empty one behind
        self._spawn()
        end = time.monotonic() + wait
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited at start (status {self.proc.returncode})")
            if pid_file.exists() and pid_file.read_text().strip() and self._listening():
                break
            if time.monotonic() > end:
                self.stop()
                raise RuntimeError("nginx did not start listening in time")
            time.sleep(0.05)
        self._watcher = threading.Thread(target=self._watch, name="nginx-watch", daemon=True)
        self._watcher.start()

    def _listening(self) -> bool:
        if not self.listen:
            return True
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if host in ("0.0.0.0", "::", "*"):
            host = "127.0.0.1" if host != "::" else "::1"
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return True
        except OSError:
            return False

    def _watch(self) -> None:
        """Restart nginx when it exits, backing off (1, 2, 4 ... 30 s between attempts).

        A master killed with SIGKILL leaves its worker serving the port until it dies; the new
        master cannot bind until then, so attempts go on (with the back-off) rather than stop.
        """
        try:
            self._restart_loop()
        finally:
            # PR_SET_PDEATHSIG fires when the *thread* that spawned nginx ends: this thread lives
            # until a nginx it restarted has finished its graceful stop.
            if self.proc is not None:
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    pass

    def _restart_loop(self) -> None:
        failures = 0
        while not self._stopping.wait(0.5):
            if self.proc is None or self.proc.poll() is None:
                if self.proc is not None and failures and self._listening():
                    failures = 0
                continue
            delay = min(30.0, 2.0 ** failures)
            failures += 1
            log.error("nginx exited (status %s); restarting it in %g s", self.proc.returncode, delay)
            if self._stopping.wait(delay):
                return
            self._spawn()

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful: SIGQUIT lets nginx finish the requests it is serving."""
        self._stopping.set()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def make_run_dir() -> str:
    """A private folder for nginx's pid, configuration and temporary files.

    0711 when running as root: nginx's workers then run as ``nobody`` and must reach the temp
    folders that the master creates (and chowns) inside it.
    """
    run_dir = tempfile.mkdtemp(prefix="ptsd-cds-nginx-")
    os.chmod(run_dir, 0o711 if os.geteuid() == 0 else 0o700)
    return run_dir
