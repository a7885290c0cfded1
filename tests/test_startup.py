"""Start-up for every way of starting, run as real commands (subprocess): gunicorn's own start as
the image runs it, ``ptsd-cds serve``, and the CLI's errors (one line, no traceback)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from cds_service import __version__

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "python:cds_service.gunicorn_conf", "cds_service:create_app()"]
CLI = [str(BIN / "ptsd-cds")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PTSD_CDS_", "_PTSD_CDS_", "PROMETHEUS_"))}
    env.update({"PTSD_CDS_DATABASE": str(tmp_path / "db.sqlite3")})
    env.update(extra)
    return env


def _run(cmd, env, timeout=60):
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _one_line_error(result, *needles):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def _serve(cmd, env, port):
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except requests.RequestException:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.kill()
    pytest.fail("server did not start: " + proc.communicate()[1][-2000:])


def _stop(proc) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err[-1000:]
    return out, err


def _events(stderr: str) -> list[dict]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_the_images_own_gunicorn_start_warns_once_in_the_master_and_sums_metrics(tmp_path):
    port = _free_port()
    metrics_dir = tmp_path / "metrics"
    env = _env(tmp_path, PTSD_CDS_AUTH="off", PTSD_CDS_BIND=f"127.0.0.1:{port}", PTSD_CDS_WORKERS="2",
               PTSD_CDS_AUHT="required", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"stale")  # a previous run's file is cleared at start
    proc, base = _serve(GUNICORN, env, port)
    try:
        calls = 12
        for _ in range(calls):
            with requests.Session() as s:  # new connection each time: spread over both workers
                assert s.get(base + "/cds-services", timeout=5).status_code == 200
        text = requests.get(base + "/metrics", timeout=5).text
        # the image's HEALTHCHECK command, following PTSD_CDS_BIND (a wildcard is probed on loopback)
        probe = _run(CLI + ["healthcheck"], _env(tmp_path, PTSD_CDS_AUTH="off", PTSD_CDS_BIND=f"0.0.0.0:{port}"))
        assert probe.returncode == 0, probe.stderr
        down = _run(CLI + ["healthcheck"], _env(tmp_path, PTSD_CDS_AUTH="off", PTSD_CDS_BIND=f"0.0.0.0:{_free_port()}"))
        assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1
    finally:
        out, err = _stop(proc)
    count = [line for line in text.splitlines()
             if line.startswith('ptsd_cds_request_duration_seconds_count{endpoint="discovery"')]
    assert len(count) == 1 and float(count[0].rsplit(" ", 1)[1]) == calls  # every worker's calls
    assert err.count("Client authentication: OFF") == 1  # the master, not once per worker
    assert err.count("Unknown setting PTSD_CDS_AUHT is ignored; did you mean PTSD_CDS_AUTH?") == 1
    events = [e["event"] for e in _events(err) if e.get("logger") == "ptsd_cds.server"]
    assert events == ["start", "stop"]
    start = next(e for e in _events(err) if e.get("event") == "start")
    assert start["version"] == __version__ and start["workers"] == 2


def test_ptsd_cds_serve_shows_the_banner_once(tmp_path):
    port = _free_port()
    env = _env(tmp_path, PTSD_CDS_BIND=f"127.0.0.1:{port}", PTSD_CDS_WORKERS="2")
    proc, base = _serve(CLI + ["serve", "--dev"], env, port)
    try:
        assert requests.get(base + "/readyz", timeout=5).json()["status"] == "ready"
    finally:
        _, err = _stop(proc)
    assert err.count("Client authentication: OFF") == 1
    assert err.count("DEVELOPMENT SETTINGS") == 1
    assert f"ptsd-cds {__version__} on http://127.0.0.1:{port}" in err


@pytest.mark.parametrize("env_extra, needle", [
    ({"PTSD_CDS_JWT_LEEWAY": "abc"}, "PTSD_CDS_JWT_LEEWAY"),
    ({"PTSD_CDS_WORKERS": "abc"}, "PTSD_CDS_WORKERS"),
    ({"PTSD_CDS_CARDS_DIR": "/tmp"}, "PTSD_CDS_CARDS_DIR"),
])
def test_gunicorn_with_a_bad_setting_prints_one_line_and_exits_once(tmp_path, env_extra, needle):
    env = _env(tmp_path, PTSD_CDS_AUTH="off", PTSD_CDS_BIND=f"127.0.0.1:{_free_port()}", **env_extra)
    result = _run(GUNICORN, env)
    assert result.returncode == 2
    _one_line_error(result, needle)


@pytest.mark.parametrize("args, env_extra, needle, status", [
    (["evaluate", "/missing.json"], {}, "/missing.json", 1),
    (["serve"], {"PTSD_CDS_WORKERS": "abc", "PTSD_CDS_AUTH": "off"}, "PTSD_CDS_WORKERS", 2),
    (["serve"], {"PTSD_CDS_CARDS_DIR": "/tmp", "PTSD_CDS_AUTH": "off"}, "PTSD_CDS_CARDS_DIR", 2),
    (["check-config"], {"PTSD_CDS_CARDS_DIR": "/tmp", "PTSD_CDS_AUTH": "off"}, "PTSD_CDS_CARDS_DIR", 2),
    (["evaluate", "fixtures/requests/ptsd-new.patient-view.json"], {"PTSD_CDS_CARDS_DIR": "/tmp"},
     "PTSD_CDS_CARDS_DIR", 2),
    (["serve", "--workers", "many"], {}, "--workers", 2),
])
def test_every_cli_error_is_one_line(tmp_path, args, env_extra, needle, status):
    result = _run(CLI + args, _env(tmp_path, **env_extra))
    assert result.returncode == status
    _one_line_error(result, needle)


def test_a_misspelt_variable_is_named_next_to_the_error_it_causes(tmp_path):
    result = _run(CLI + ["check-config"], _env(tmp_path, PTSD_CDS_AUHT="off"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown setting PTSD_CDS_AUHT is ignored; did you mean PTSD_CDS_AUTH?" in result.stderr
    assert "PTSD_CDS_TRUSTED_ISSUERS" in result.stderr.splitlines()[-1]


def test_version(tmp_path):
    result = _run(CLI + ["--version"], _env(tmp_path))
    assert result.returncode == 0 and result.stdout.strip() == f"ptsd-cds {__version__}"


def test_the_app_factory_logs_the_warnings_itself(make_app, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="ptsd_cds")
    make_app(auth="off")
    assert any("Client authentication: OFF" in r.getMessage() for r in caplog.records)


def test_the_app_factory_stays_quiet_when_the_master_already_warned(make_app, caplog, monkeypatch):
    import logging

    from cds_service.startup import DONE_MARK

    monkeypatch.setenv(DONE_MARK, "1")
    caplog.set_level(logging.WARNING, logger="ptsd_cds")
    make_app(auth="off")
    assert not any("Client authentication" in r.getMessage() for r in caplog.records)
