"""The nginx configuration `ptsd-cds serve` renders, and when serve insists on nginx (issue #11)."""

from __future__ import annotations

import pytest

from cds_service import cli, proxy
from cds_service.config import ConfigError, Settings


def test_rendered_config_bounds_request_reading_and_buffers_requests(tmp_path):
    conf = proxy.render(listen="127.0.0.1:8080", upstreams=["127.0.0.1:9001", "127.0.0.1:9002"],
                        run_dir=str(tmp_path), max_body=1234, header_timeout=7, body_timeout=9)
    assert "{{" not in conf
    for line in ("listen 127.0.0.1:8080;", "server 127.0.0.1:9001 max_fails=1", "server 127.0.0.1:9002 max_fails=1",
                 "client_header_timeout 7s;", "client_body_timeout 9s;", "client_max_body_size 1234;",
                 "proxy_request_buffering on;", "server_tokens off;", f"pid {tmp_path}/nginx.pid;"):
        assert line in conf, line


def test_rendered_config_is_accepted_by_nginx(tmp_path):
    conf = proxy.render(listen="127.0.0.1:1", upstreams=["127.0.0.1:2"], run_dir=str(tmp_path), max_body=10,
                        header_timeout=1, body_timeout=1)
    nginx = proxy.NginxProxy(conf, str(tmp_path))
    import subprocess

    check = subprocess.run(nginx._args() + ["-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("value", ["maybe", "", "apache"])
def test_proxy_setting_is_validated(value):
    with pytest.raises(ConfigError, match="PTSD_CDS_PROXY"):
        Settings().with_overrides({"auth": "off", "proxy": value})


@pytest.mark.parametrize("name", ["request_header_timeout", "request_body_timeout"])
@pytest.mark.parametrize("value", ["0", "-1", "301"])
def test_request_timeouts_are_validated(name, value):
    with pytest.raises(ConfigError, match=name.upper()):
        Settings().with_overrides({"auth": "off", name: value})


def test_production_serve_refuses_to_run_without_nginx(monkeypatch):
    monkeypatch.setattr(proxy, "nginx_binary", lambda: None)  # a machine without nginx
    with pytest.raises(ConfigError, match="nginx is not installed"):
        cli._proxy_plan(Settings().with_overrides({"auth": "off"}))
    # Development falls back to gunicorn alone (with a warning); off is always honoured.
    assert cli._proxy_plan(Settings().with_overrides({"auth": "off", "env": "development"})) is False
    assert cli._proxy_plan(Settings().with_overrides({"auth": "off", "proxy": "off"})) is False
    with pytest.raises(ConfigError):
        cli._proxy_plan(Settings().with_overrides({"auth": "off", "env": "development", "proxy": "nginx"}))
