"""The ptsd-cds console script: evaluate a request offline, check the configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_service.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "requests"


def test_evaluate_prints_the_cards_of_a_request(capsys):
    assert main(["evaluate", str(FIXTURES / "ptsd-benzo-therapy.select-lorazepam.json"), "--today", "2026-11-28"]) == 0
    cards = json.loads(capsys.readouterr().out)["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["benzodiazepine-avoid"]


def test_evaluate_reports_an_invalid_request(tmp_path, capsys):
    request = tmp_path / "bad.json"
    request.write_text(json.dumps({"hook": "patient-view", "context": {}}))
    assert main(["evaluate", str(request)]) == 1
    assert "hookInstance" in capsys.readouterr().err


def test_evaluate_without_data_says_what_is_missing(tmp_path, capsys):
    request = tmp_path / "no-data.json"
    request.write_text(json.dumps({"hook": "patient-view", "hookInstance": "x",
                                   "context": {"userId": "Practitioner/1", "patientId": "p1"}}))
    assert main(["evaluate", str(request)]) == 1
    assert "conditions" in capsys.readouterr().err


def test_check_config_accepts_the_development_settings(monkeypatch, capsys):
    monkeypatch.setenv("PTSD_CDS_AUTH", "required")
    monkeypatch.setenv("PTSD_CDS_TRUSTED_ISSUERS", str(Path(__file__).resolve().parents[1]
                                                        / "cds_service" / "data" / "dev-trusted-issuers.json"))
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "configuration OK" in out and "sandbox.cds-hooks.org" in out


@pytest.mark.parametrize("env,needle", [
    ({"PTSD_CDS_AUTH": "required"}, "PTSD_CDS_TRUSTED_ISSUERS"),
    ({"PTSD_CDS_AUTH": "off", "PTSD_CDS_FHIR_SERVERS": "ftp://fhir.example.org"}, "PTSD_CDS_FHIR_SERVERS"),
])
def test_check_config_fails_with_a_clear_message(monkeypatch, capsys, env, needle):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["check-config"]) == 2
    assert needle in capsys.readouterr().err


def test_the_banner_warns_about_the_sandbox_only_when_it_is_trusted(tmp_path):
    from cds_service.cli import _banner, _issuer_lines
    from cds_service.config import Settings

    dev_issuers = Path(__file__).resolve().parents[1] / "cds_service" / "data" / "dev-trusted-issuers.json"
    sandbox = Settings(auth="required", trusted_issuers=str(dev_issuers))
    assert "Trusting the CDS Hooks sandbox" in _banner(sandbox, "127.0.0.1:8080", _issuer_lines(sandbox))
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key()))
    own = tmp_path / "issuers.json"
    own.write_text(json.dumps({"issuers": [{"iss": "https://ehr.example.org",
                                            "jwks": {"keys": [{**jwk, "kid": "k1", "use": "sig"}]}}]}))
    mine = Settings(auth="required", env="development", trusted_issuers=str(own))
    assert "Trusting the CDS Hooks sandbox" not in _banner(mine, "127.0.0.1:8080", _issuer_lines(mine))
    off = Settings(auth="off", env="development")
    text = _banner(off, "127.0.0.1:8080")
    assert "Trusting the CDS Hooks sandbox" not in text and "OFF" in text


def test_evaluate_strict_reports_what_a_strict_reader_rejects(tmp_path, capsys):
    import json as _json

    from cds_service.cli import main
    from tests.builders import full_prefetch, hook_request, lorazepam, ptsd_condition

    condition = {**ptsd_condition(), "onsetDateTime": "last spring"}
    order = {**lorazepam(), "subject": {"reference": 42}}
    request = tmp_path / "req.json"
    request.write_text(_json.dumps(hook_request("order-sign", prefetch=full_prefetch(conditions=[condition]),
                                                drafts=[order])))
    assert main(["evaluate", str(request), "--today", "2026-11-28", "--strict"]) == 3
    out, err = capsys.readouterr()
    cards = _json.loads(out)["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["benzodiazepine-avoid"]  # read leniently
    assert "strict: Condition/cond-ptsd: onsetDateTime" in err and "MedicationRequest/mr-lorazepam: subject" in err
    assert "last spring" not in err  # where, never what
    assert "2 of " in err
    assert main(["evaluate", str(request), "--today", "2026-11-28"]) == 0
