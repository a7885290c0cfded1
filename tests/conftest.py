from __future__ import annotations

import pytest

from cds_service import create_app
from cds_service.config import Settings
from cds_service.engine import Engine
from cds_service.schemas.response import validate_response


def pytest_configure(config):
    config.addinivalue_line("markers", "spec(requirement): CHECKLIST.md requirement id a test checks")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Tests never depend on PTSD_CDS_* variables of the machine that runs them."""
    import os

    for key in list(os.environ):
        if key.startswith("PTSD_CDS_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def settings() -> Settings:
    """Development settings with authentication off (the engine tests' default)."""
    return Settings(auth="off", env="development")


@pytest.fixture(scope="module")
def engine(settings) -> Engine:
    """One clinical engine per test module (cards and terminology loaded once)."""
    return Engine(settings)


@pytest.fixture
def make_app(tmp_path):
    def _make(**overrides):
        config = {"auth": "off", "database": str(tmp_path / "ptsd-cds.sqlite3"),
                  "today": "2026-11-28", **overrides}
        return create_app(config)

    return _make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def assert_conformant(resp):
    """200 and a CDS Hooks 2.0 response body that passes the response schema (CHECKLIST §4)."""
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    problems = validate_response(body)
    assert problems == [], problems
    return body


def assert_outcome(resp, status):
    """An error answered with the given status and a FHIR OperationOutcome (no stack trace)."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    text = " ".join(i["diagnostics"] for i in body["issue"])
    assert "Traceback" not in text and 'File "' not in text
    assert all(i["severity"] in ("error", "fatal") for i in body["issue"])
    return text


# --- a real PostgreSQL server (tests/pg_server.py), started once per test session ------------
@pytest.fixture(scope="session")
def pg_server():
    from tests.pg_server import PgServer

    server = PgServer().init()
    yield server
    server.destroy()


@pytest.fixture
def pg_url(pg_server, request):
    """A fresh, empty database on the session's PostgreSQL server (one per test)."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:8]
    return pg_server.create_database(name)
