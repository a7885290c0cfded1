"""The production worker model (issue #11): `ptsd-cds serve` = nginx in front of gunicorn.

Real processes on loopback ports (Debian's nginx, installed by .ci/run): slow and idle clients
do not starve the workers and are closed after the header timeout; SIGTERM drains in-flight
calls; a killed worker is replaced without failing a call on another worker; two instances behind
nginx (issue #10 item 7): round robin, a dead instance skipped, slow clients held by nginx.
Bounded: a few seconds of slow clients, a few dozen calls.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from cds_service import proxy as nginx
from tests.builders import full_prefetch, hook_request, lorazepam, ptsd_condition
from tests.fault_servers import FaultServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from slow_clients import SlowClients  # noqa: E402

# No skip without nginx: .ci/run installs Debian's nginx; a machine without it fails loudly here.
BENZO = json.dumps(hook_request("order-select", prefetch=full_prefetch(conditions=[ptsd_condition()]),
                                drafts=[lorazepam()]))


# The slow-but-correct FHIR server must fit in the budget even on a loaded CI machine.
SLOW_FHIR_OK = {"PTSD_CDS_FHIR_TOTAL_BUDGET": "8", "PTSD_CDS_FHIR_READ_TIMEOUT": "6",
                "PTSD_CDS_FHIR_CONNECT_TIMEOUT": "2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, log: Path, seconds: float = 30) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail("server exited: " + log.read_text(errors="replace")[-2000:])
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail("server did not start: " + log.read_text(errors="replace")[-2000:])


def start_serve(tmp: Path, name: str, *, proxy: str = "nginx", workers: int = 2, threads: int = 4,
                extra: dict | None = None) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = tmp / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTSD_CDS_")}
    env.update({"PTSD_CDS_AUTH": "off", "PTSD_CDS_DATABASE": str(tmp / f"{name}.sqlite3"),
                "PTSD_CDS_TODAY": "2026-11-28", "PTSD_CDS_PROXY": proxy, "PTSD_CDS_THREADS": str(threads),
                "PTSD_CDS_REQUEST_HEADER_TIMEOUT": "2", "PTSD_CDS_REQUEST_BODY_TIMEOUT": "2",
                **(extra or {})})
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cds_service.cli", "serve", "--bind", f"127.0.0.1:{port}",
                                 "--workers", str(workers)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, proc, log)
    return proc, base, log


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def post_benzo(base: str, timeout: float = 5.0) -> requests.Response:
    return requests.post(base + "/cds-services/ptsd-order-select", data=BENZO, timeout=timeout,
                         headers={"Content-Type": "application/json"})


def children(pid: int) -> list[tuple[int, str]]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append((int(entry.name), cmd))
    return out


def gunicorn_workers(pid: int) -> list[int]:
    return sorted(p for p, cmd in children(pid) if "nginx" not in cmd)


def has_connection_to(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a TCP connection to 127.0.0.1:``port`` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes and int(fields[2].split(":")[1], 16) == port:
            return True
    return False


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    proc, base, log = start_serve(tmp_path_factory.mktemp("serve"), "one")
    yield proc, base, log
    stop(proc)


def test_serve_puts_nginx_in_front_and_answers_hooks(served):
    proc, base, log = served
    assert "nginx on" in log.read_text()
    assert any("nginx" in cmd for _, cmd in children(proc.pid))
    resp = post_benzo(base)
    assert resp.status_code == 200
    assert [c["source"]["topic"]["code"] for c in resp.json()["cards"]] == ["benzodiazepine-avoid"]
    assert resp.headers["Server"] == "ptsd-cds"  # the service's banner, no nginx version


def test_fifty_slow_clients_do_not_delay_hook_calls(served):
    proc, base, _ = served
    port = int(base.rsplit(":", 1)[1])
    slow = SlowClients("127.0.0.1", port, 50, interval=0.5, seconds=8).start()
    try:
        time.sleep(1.0)
        times = []
        for _ in range(15):
            t0 = time.monotonic()
            resp = post_benzo(base)
            times.append(time.monotonic() - t0)
            assert resp.status_code == 200 and resp.json()["cards"]
        # 50 slow clients against 8 gunicorn threads: without the proxy these calls time out.
        assert max(times) < 1.0, times
        time.sleep(2.5)  # past PTSD_CDS_REQUEST_HEADER_TIMEOUT=2
        summary = slow.summary()
        # Header tricklers and idle connections were closed by the header timeout (and reopened).
        assert summary["closed_by_server"] >= 20, summary
    finally:
        slow.stop()


def test_a_stalled_body_or_one_idle_byte_is_closed_after_the_timeout(served):
    _, base, _ = served
    port = int(base.rsplit(":", 1)[1])
    for first in (b"P", b"POST /cds-services/ptsd-order-select HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(first)
            s.settimeout(6)
            t0 = time.monotonic()
            try:
                data = s.recv(100)
            except ConnectionResetError:
                data = b""
            assert data == b"" and 1.5 < time.monotonic() - t0 < 5  # closed after ~2 s, no thread held


def test_sigterm_drains_in_flight_calls(tmp_path):
    fhir = FaultServer().start()
    fhir.slow_ok_delay = 1.5
    proc, base, _ = start_serve(tmp_path, "drain", extra=SLOW_FHIR_OK)
    try:
        body = json.dumps(hook_request("patient-view", fhir_server=fhir.base("slow-ok")))
        results = []

        def slow_call():
            r = requests.post(base + "/cds-services/ptsd-patient-view", data=body, timeout=15,
                              headers={"Content-Type": "application/json"})
            results.append((r.status_code, r.json()))

        threads = [threading.Thread(target=slow_call) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.7)  # the calls are waiting on the FHIR server
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(20)
        assert [s for s, _ in results] == [200, 200, 200], results
        assert all("cards" in body for _, body in results)
        assert proc.wait(20) == 0
        assert not [cmd for _, cmd in children(proc.pid) if "nginx" in cmd]  # nginx stopped too
    finally:
        stop(proc)
        fhir.close()


def test_a_killed_worker_is_replaced_without_failing_calls_on_the_other(tmp_path):
    fhir = FaultServer().start()
    fhir.slow_ok_delay = 2.5
    proc, base, _ = start_serve(tmp_path, "kill", threads=1, extra=SLOW_FHIR_OK)
    try:
        before = gunicorn_workers(proc.pid)
        assert len(before) == 2
        body = json.dumps(hook_request("patient-view", fhir_server=fhir.base("slow-ok")))
        result = []
        t = threading.Thread(target=lambda: result.append(requests.post(
            base + "/cds-services/ptsd-patient-view", data=body, timeout=15,
            headers={"Content-Type": "application/json"}).status_code))
        t.start()
        end = time.monotonic() + 5
        busy = []
        while not busy and time.monotonic() < end:
            busy = [w for w in before if has_connection_to(w, fhir.port)]
            time.sleep(0.05)
        assert len(busy) == 1, "the in-flight call is on one worker"
        idle = [w for w in before if w not in busy][0]
        os.kill(idle, signal.SIGKILL)
        t.join(15)
        assert result == [200]  # the call on the other worker was not failed
        end = time.monotonic() + 15
        while time.monotonic() < end:
            now = gunicorn_workers(proc.pid)
            if len(now) == 2 and idle not in now:
                break
            time.sleep(0.2)
        assert len(now) == 2 and idle not in now and busy[0] in now  # replaced
        assert all(post_benzo(base).status_code == 200 for _ in range(6))
    finally:
        stop(proc)
        fhir.close()


def test_a_killed_nginx_is_restarted(tmp_path):
    proc, base, log = start_serve(tmp_path, "nginx-kill")
    try:
        master = [p for p, cmd in children(proc.pid) if "nginx: master" in cmd]
        assert len(master) == 1
        workers = [p for p, _ in children(master[0])]
        os.kill(master[0], signal.SIGKILL)
        for w in workers:  # a killed master's workers would keep the port; kill them too
            os.kill(w, signal.SIGKILL)
        end = time.monotonic() + 15
        healthy = False
        while time.monotonic() < end and not healthy:
            time.sleep(0.3)
            try:
                healthy = requests.get(base + "/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                pass
        assert healthy, log.read_text()[-2000:]
        now = [p for p, cmd in children(proc.pid) if "nginx: master" in cmd]
        assert len(now) == 1 and now != master
        assert post_benzo(base).status_code == 200
    finally:
        stop(proc)


# --- two instances behind nginx (issue #10 item 7) ----------------------------------------------
def test_two_instances_behind_nginx(tmp_path):
    one, base1, log1 = start_serve(tmp_path, "inst1", proxy="off", workers=1, threads=1)
    two, base2, log2 = start_serve(tmp_path, "inst2", proxy="off", workers=1, threads=1)
    port = free_port()
    run_dir = nginx.make_run_dir()
    conf = nginx.render(listen=f"127.0.0.1:{port}", upstreams=[base1[7:], base2[7:]], run_dir=run_dir,
                        max_body=10 * 1024 * 1024, header_timeout=2, body_timeout=2)
    front = nginx.NginxProxy(conf, run_dir, listen=f"127.0.0.1:{port}")
    front.start()
    base = f"http://127.0.0.1:{port}"
    try:
        # Round robin: both instances serve calls.
        for _ in range(10):
            assert post_benzo(base).status_code == 200
        served = [log.read_text().count('"event":"call"') for log in (log1, log2)]
        assert min(served) >= 3 and sum(served) >= 10, served
        # Slow clients are held by nginx: each instance has ONE thread, yet calls pass.
        slow = SlowClients("127.0.0.1", port, 20, interval=0.5, seconds=4).start()
        try:
            time.sleep(0.5)
            assert all(post_benzo(base, timeout=2).status_code == 200 for _ in range(6))
        finally:
            slow.stop()
        # A dead instance is skipped: every call still answered.
        stop(one)
        codes = [post_benzo(base).status_code for _ in range(10)]
        assert codes == [200] * 10, codes
        # Both dead: an OperationOutcome, not nginx's HTML page.
        stop(two)
        resp = requests.post(base + "/cds-services/ptsd-order-select", data=BENZO, timeout=5,
                             headers={"Content-Type": "application/json"})
        assert resp.status_code == 503 and resp.json()["resourceType"] == "OperationOutcome"
        assert resp.headers["Retry-After"]
    finally:
        front.stop()
        stop(one)
        stop(two)


def test_compose_nginx_conf_is_the_rendered_template():
    """deploy/nginx/nginx.conf (docker compose) is the template rendered for the two replicas."""
    rendered = nginx.render(listen="8080", upstreams=["ptsd-cds-1:8080", "ptsd-cds-2:8080"],
                            run_dir="/tmp", max_body=10 * 1024 * 1024, header_timeout=10,
                            body_timeout=10, worker_processes="auto")
    assert (ROOT / "deploy" / "nginx" / "nginx.conf").read_text() == rendered


def test_compose_file_has_postgres_two_replicas_and_the_proxy():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"postgres", "ptsd-cds-1", "ptsd-cds-2", "proxy"} <= set(services)
    published = [p.rsplit(":", 1)[0] for svc in services.values() for p in svc.get("ports", [])]
    assert len(published) == len(set(published))  # no two services on one host port
    for name in ("ptsd-cds-1", "ptsd-cds-2"):
        svc = services[name]
        env = svc["environment"]
        assert env["PTSD_CDS_DATABASE"].startswith("postgresql://")
        assert env["PTSD_CDS_PROXY"] == "off"  # behind the proxy service
        assert "ports" not in svc  # only the proxy is published
        assert "postgres" in svc["depends_on"]
    proxy = services["proxy"]
    assert any(p.endswith(":8080") for p in proxy["ports"])
    assert any("deploy/nginx/nginx.conf" in v for v in proxy["volumes"])
    assert set(proxy["depends_on"]) >= {"ptsd-cds-1", "ptsd-cds-2"}
