"""Discovery: GET /cds-services (CHECKLIST §2, §3.4)."""

from __future__ import annotations

import re

import pytest

EXPECTED = {"ptsd-patient-view": "patient-view", "ptsd-order-select": "order-select",
            "ptsd-order-sign": "order-sign"}
ALLOWED_TOKENS = {"{{context.patientId}}", "{{context.userId}}", "{{context.encounterId}}",
                  "{{userPractitionerId}}", "{{userPractitionerRoleId}}", "{{userPatientId}}",
                  "{{userRelatedPersonId}}"}


@pytest.mark.spec("DISC-01 DISC-02 DISC-04 DISC-06")
def test_discovery_lists_the_three_services_with_required_fields(client):
    resp = client.get("/cds-services")
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    services = resp.get_json()["services"]
    assert {s["id"]: s["hook"] for s in services} == EXPECTED
    for service in services:
        for field in ("title", "description", "usageRequirements"):
            assert isinstance(service[field], str) and service[field].strip()


@pytest.mark.spec("PF-01 PF-02 PF-03 PF-05")
def test_prefetch_templates_use_only_cds_hooks_2_tokens_and_cover_the_rules_data(client):
    for service in client.get("/cds-services").get_json()["services"]:
        prefetch = service["prefetch"]
        assert set(prefetch) == {"patient", "conditions", "medications", "procedures"}
        resource_types = {template.split("?")[0].split("/")[0] for template in prefetch.values()}
        assert resource_types == {"Patient", "Condition", "MedicationRequest", "Procedure"}
        for template in prefetch.values():
            tokens = set(re.findall(r"\{\{[^}]*\}\}", template))
            assert tokens and tokens <= ALLOWED_TOKENS, template
            assert "draftOrders" not in template and "selections" not in template


@pytest.mark.spec("GEN-02")
def test_discovery_has_no_null_or_empty_members(client):
    from cds_service.schemas.response import empty_members

    assert empty_members(client.get("/cds-services").get_json()) == []
