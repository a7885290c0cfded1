"""The container set-up, checked without a Docker engine: the compose file parsed, the Dockerfile's
promises, pinned versions in step with pyproject.toml, the FHIR server's fixture Bundles and their
loader (run against a real local HTTP server)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import hapi_bundles  # noqa: E402
import load_fhir  # noqa: E402

from tests.local_servers import FhirJsonHandler, local_fhir_server  # noqa: E402


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _env_default(value: str) -> str:
    """``${VAR:-default}`` as compose resolves it when VAR is unset."""
    m = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return m.group(1) if m else value


def test_compose_runs_the_service_with_a_volume_and_the_example_issuers(compose):
    svc = compose["services"]["ptsd-cds"]
    assert svc["restart"] == "on-failure:3"  # bounded restarts: a bad setting does not crash-loop
    assert "profiles" not in svc  # `docker compose up` starts it
    volumes = dict(v.split(":", 1) for v in svc["volumes"])
    assert volumes["ptsd-cds-data"] == "/data" and "ptsd-cds-data" in compose["volumes"]
    assert volumes["./config"] == "/config:ro"
    issuers = _env_default(svc["environment"]["PTSD_CDS_TRUSTED_ISSUERS"])
    local = ROOT / "config" / Path(issuers).relative_to("/config")
    assert local.is_file()
    assert _env_default(svc["environment"]["PTSD_CDS_AUTH"]) == "required"
    assert all(p.startswith("127.0.0.1:") for p in svc.get("ports", []))  # published on loopback only
    assert svc["read_only"] is True and "/tmp" in svc["tmpfs"]  # the metrics directory lives in /tmp


def test_every_compose_setting_is_a_known_variable(compose):
    from cds_service.config import known_variables

    env = compose["services"]["ptsd-cds"]["environment"]
    assert [k for k in env if k.startswith("PTSD_CDS_") and k not in known_variables()] == []


def test_the_example_issuer_file_is_accepted_by_the_service():
    from cds_service.config import Settings
    from cds_service.startup import issuer_lines

    lines = issuer_lines(Settings(auth="required", trusted_issuers=str(ROOT / "config" / "trusted-issuers.example.json")))
    assert any("https://sandbox.cds-hooks.org" in line for line in lines)
    assert len(lines) == 2


def test_the_fhir_profile_is_opt_in_and_loads_the_fixture_bundles(compose):
    hapi, loader = compose["services"]["hapi"], compose["services"]["hapi-load"]
    assert hapi["profiles"] == ["fhir"] and loader["profiles"] == ["fhir"]
    assert re.fullmatch(r"hapiproject/hapi:v\d+\.\d+\.\d+", hapi["image"])  # pinned, not :latest
    assert hapi["ports"] == ["127.0.0.1:8090:8080"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in loader["volumes"])
    assert (ROOT / mounts["./scripts/load_fhir.py"].lstrip("/")).name == "load_fhir.py"
    assert (ROOT / "scripts" / "load_fhir.py").is_file() and (ROOT / "fixtures" / "hapi").is_dir()
    assert loader["command"][-2:] == ["http://hapi:8080/fhir", "/bundles"]
    assert "restart" in loader and loader["restart"].startswith("on-failure")


def test_dockerfile_pins_healthchecks_on_bind_and_starts_nginx_and_gunicorn():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "pip install -c constraints.txt ." in text
    assert "COPY pyproject.toml README.md LICENSE constraints.txt ./" in text
    assert 'HEALTHCHECK' in text and '"ptsd-cds", "healthcheck"' in text  # reads PTSD_CDS_BIND
    assert "127.0.0.1:8080/healthz" not in text  # no fixed address
    # `ptsd-cds serve`: nginx in front of gunicorn (issue #11); gunicorn's own start stays supported
    # (tests/test_startup.py runs it) for an operator who puts another buffering proxy in front.
    assert 'CMD ["ptsd-cds", "serve"]' in text and "install -y --no-install-recommends nginx" in text
    assert "USER ptsd" in text


@pytest.mark.parametrize("bind, url", [
    ("0.0.0.0:8080", "http://127.0.0.1:8080/healthz"),
    ("127.0.0.1:9000", "http://127.0.0.1:9000/healthz"),
    ("[::]:8443", "http://[::1]:8443/healthz"),
    ("10.1.2.3:8080", "http://10.1.2.3:8080/healthz"),
])
def test_the_healthcheck_follows_the_bind_address(bind, url):
    from cds_service.cli import healthcheck_url

    assert healthcheck_url(bind) == url


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_runtime_dependency_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = _pins()
    for dep in project["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt (scripts/pin_constraints.py)"
        assert req.specifier.contains(pins[name], prereleases=True), (req.name, pins[name], str(req.specifier))
    test_only = {canonicalize_name(Requirement(d).name) for d in project["optional-dependencies"]["test"]}
    assert not test_only & set(pins)  # the image carries no test tools


def test_constraints_are_the_installed_runtime_closure():
    """What scripts/pin_constraints.py would write now (in this environment) is what is committed."""
    import pin_constraints

    current = pin_constraints.closure()
    pins = _pins()
    assert set(current) == set(pins)
    assert {n: v for n, v in current.items() if pins.get(n) != v} == {}


def test_fhir_bundles_are_up_to_date_valid_and_synthetic():
    from fhir.resources.R4B.bundle import Bundle

    built = hapi_bundles.build()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "fixtures" / "hapi").glob("*.json")}
    assert built == on_disk  # python scripts/hapi_bundles.py
    patients = {p.name for p in (ROOT / "fixtures" / "patients").glob("*.json")}
    assert set(built) == patients - hapi_bundles.NOT_VALID_FHIR
    for name, text in built.items():
        data = json.loads(text)
        Bundle.model_validate(data)  # valid FHIR (R4B Bundle, which R4 transaction Bundles fit)
        assert data["type"] == "transaction"
        [patient] = [e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "Patient"]
        assert patient["name"][0]["family"] == "Fixture"
        for entry in data["entry"]:
            r = entry["resource"]
            assert entry["request"] == {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
        source = json.loads((ROOT / "fixtures" / "patients" / name).read_text(encoding="utf-8"))
        assert len(source["entry"]) == len(data["entry"])


class _FakeFhir(FhirJsonHandler):
    posted: list[tuple[str, str, dict]] = []
    fail: set[str] = set()

    def do_GET(self):  # noqa: N802
        self.send_json(200, {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeFhir.posted.append((self.path, self.headers["Content-Type"], body))
        failed = body["id"] in _FakeFhir.fail
        self.send_json(400 if failed else 200, {"resourceType": "Bundle", "type": "transaction-response"})


@pytest.fixture
def fake_fhir():
    _FakeFhir.posted, _FakeFhir.fail = [], set()
    with local_fhir_server(_FakeFhir) as base:
        yield base


def test_the_loader_posts_every_bundle_as_fhir_json(fake_fhir):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "load_fhir.py"), fake_fhir,
                             str(ROOT / "fixtures" / "hapi"), "10"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(_FakeFhir.posted) == len(list((ROOT / "fixtures" / "hapi").glob("*.json")))
    assert {(p, t) for p, t, _ in _FakeFhir.posted} == {("/fhir", "application/fhir+json")}


def test_the_loader_reports_a_refused_bundle(fake_fhir, capsys):
    _FakeFhir.fail = {"ptsd-new-load"}
    assert load_fhir.main([fake_fhir, str(ROOT / "fixtures" / "hapi"), "10"]) == 1
    assert "ptsd-new.json: HTTP 400" in capsys.readouterr().err
