"""Settings from PTSD_CDS_* variables, checked at start with clear errors."""

from __future__ import annotations

import pytest

from cds_service.config import ConfigError, Settings


def test_defaults_are_safe():
    settings = Settings()
    assert settings.auth == "required" and settings.env == "production"
    assert "HS256" not in settings.jwt_algorithms and "none" not in settings.jwt_algorithms


def test_environment_variables_are_read_and_typed():
    settings = Settings.from_env({"PTSD_CDS_AUTH": "off", "PTSD_CDS_MAX_BODY": "1234",
                                  "PTSD_CDS_FHIR_SERVERS": "https://a.org/fhir, https://b.org/r4",
                                  "PTSD_CDS_FHIR_READ_TIMEOUT": "0.5", "PTSD_CDS_TODAY": "2026-01-02"})
    assert settings.auth == "off" and settings.max_body == 1234
    assert settings.fhir_servers == ("https://a.org/fhir", "https://b.org/r4")
    assert settings.fhir_read_timeout == 0.5 and settings.today.isoformat() == "2026-01-02"


@pytest.mark.parametrize("env,needle", [
    ({"PTSD_CDS_AUTH": "maybe"}, "PTSD_CDS_AUTH"),
    ({"PTSD_CDS_AUTH": "off", "PTSD_CDS_MAX_BODY": "lots"}, "PTSD_CDS_MAX_BODY"),
    ({"PTSD_CDS_AUTH": "off", "PTSD_CDS_JWT_ALGORITHMS": "ES384,HS256"}, "PTSD_CDS_JWT_ALGORITHMS"),
    ({"PTSD_CDS_AUTH": "required"}, "PTSD_CDS_TRUSTED_ISSUERS"),
    ({"PTSD_CDS_AUTH": "off", "PTSD_CDS_CARDS_DIR": "/nonexistent"}, "PTSD_CDS_CARDS_DIR"),
    ({"PTSD_CDS_AUTH": "off", "PTSD_CDS_FHIR_TOTAL_BUDGET": "0"}, "PTSD_CDS_FHIR_TOTAL_BUDGET"),
])
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env(env).validate()


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings().with_overrides({"PTSD_CDS_NOPE": "1"})


def test_create_app_refuses_to_start_with_bad_settings(tmp_path):
    from cds_service import create_app

    with pytest.raises(ConfigError, match="PTSD_CDS_TRUSTED_ISSUERS"):
        create_app({"auth": "required", "database": str(tmp_path / "db.sqlite3")})
