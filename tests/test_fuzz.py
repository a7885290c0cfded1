"""Hypothesis fuzzing over hook requests, in-process (Flask test client) — issue #11.

Requests are FHIR-shaped (PTSD Condition, benzodiazepine draft, Bundles, Patient) with values
mangled in place: wrong JSON types in any field, empty and huge strings, unicode, deep nesting.
JSON syntax is never broken (that is the JSON layer's own test). Properties:

* no 5xx, ever; every 4xx is a FHIR OperationOutcome; every 200 is a conformant CDS response;
* a benzodiazepine draft for a patient with PTSD keeps its benzodiazepine card whatever value an
  element the rules do not need takes (the reading layer of issue 7); only a value nested past the
  request's depth limit makes the whole call a 400 instead.

Bounded for CI (``FUZZ_EXAMPLES``, default 150 per property, ~30 s); ``make fuzz`` runs 3,000.
Lone surrogates are left out here: strict encoding is the JSON layer's (the lead's) change.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cds_service import create_app
from cds_service.schemas.response import validate_response
from tests.builders import full_prefetch, hook_request, lorazepam, patient, ptsd_condition

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("FUZZ_RANDOM"),
                database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory):
    app = create_app({"auth": "off", "database": str(tmp_path_factory.mktemp("fuzz") / "db.sqlite3"),
                      "today": "2026-11-28"})
    return app.test_client()


def base_request(hook: str) -> dict[str, Any]:
    drafts = [lorazepam()] if hook != "patient-view" else ()
    body = hook_request(hook, prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=drafts)
    body["prefetch"]["patient"] = patient()
    return body


# --- values ---------------------------------------------------------------------------------------
text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
huge = st.sampled_from([10_000, 100_000, 400_000]).map(lambda n: "\u00e9x" * (n // 2))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), text, huge)


def deep(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


values = st.one_of(
    scalars,
    st.lists(scalars, max_size=5),
    st.dictionaries(text, scalars, max_size=5),
    st.integers(min_value=5, max_value=200).map(deep),
    st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(text, kids, max_size=3),
                 max_leaves=10),
)


# --- paths ----------------------------------------------------------------------------------------
Path = tuple[Any, ...]


def paths(doc: Any, prefix: Path = ()) -> list[Path]:
    out: list[Path] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(prefix + (k,))
            out.extend(paths(v, prefix + (k,)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append(prefix + (i,))
            out.extend(paths(v, prefix + (i,)))
    return out


def replaced(doc: Any, path: Path, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


def post(client, body: Any):
    return client.post(f"/cds-services/ptsd-{body.get('hook', 'patient-view')}"
                       if isinstance(body, dict) and isinstance(body.get("hook"), str)
                       and body["hook"] in ("patient-view", "order-select", "order-sign")
                       else "/cds-services/ptsd-patient-view",
                       data=json.dumps(body), content_type="application/json")


def assert_well_answered(resp) -> dict:
    assert resp.status_code < 500, resp.get_data(as_text=True)[:500]
    doc = resp.get_json()
    if resp.status_code >= 400:
        assert doc["resourceType"] == "OperationOutcome" and doc["issue"], doc
    else:
        assert resp.status_code == 200
        assert validate_response(doc) == [], doc
    return doc


@st.composite
def mangled_requests(draw) -> Any:
    hook = draw(st.sampled_from(["patient-view", "order-select", "order-sign"]))
    body = base_request(hook)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        all_paths = paths(body)
        if not all_paths:
            break
        body = replaced(body, draw(st.sampled_from(all_paths)), draw(values))
    return body


@FUZZ
@given(body=mangled_requests())
def test_no_5xx_and_every_4xx_is_an_operation_outcome(fuzz_client, body):
    assert_well_answered(post(fuzz_client, body))


@FUZZ
@given(raw=values)
def test_any_json_value_as_the_whole_body(fuzz_client, raw):
    assert_well_answered(fuzz_client.post("/cds-services/ptsd-order-sign", data=json.dumps(raw),
                                          content_type="application/json"))


@FUZZ
@given(raw=values, field=st.sampled_from(["card", "outcome", "outcomeTimestamp", "overrideReason",
                                          "acceptedSuggestions"]))
def test_feedback_with_wrong_types_is_never_a_5xx(fuzz_client, raw, field):
    item = {"card": "0b7a8f9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "outcome": "accepted",
            "outcomeTimestamp": "2026-11-28T12:00:00Z", field: raw}
    resp = fuzz_client.post("/cds-services/ptsd-order-sign/feedback", data=json.dumps({"feedback": [item]}),
                            content_type="application/json")
    assert resp.status_code < 500, resp.get_data(as_text=True)[:500]
    if resp.status_code >= 400:
        assert resp.get_json()["resourceType"] == "OperationOutcome"


# --- the benzodiazepine warning survives mangled unrelated elements --------------------------------
# Elements the rules need (left intact): which resource, the order's status/intent/doNotPerform,
# the drug's system+code, the condition's code and statuses. Everything else is "unrelated".
_DRAFT = ("context", "draftOrders", "entry", 0, "resource")
_COND = ("prefetch", "conditions", "entry", 0, "resource")
NEEDED = {
    _DRAFT + ("resourceType",), _DRAFT + ("id",), _DRAFT + ("status",), _DRAFT + ("intent",),
    _DRAFT + ("medicationCodeableConcept",), _DRAFT + ("medicationCodeableConcept", "coding"),
    _DRAFT + ("medicationCodeableConcept", "coding", 0),
    _DRAFT + ("medicationCodeableConcept", "coding", 0, "system"),
    _DRAFT + ("medicationCodeableConcept", "coding", 0, "code"),
    _COND + ("resourceType",), _COND + ("code",), _COND + ("code", "coding"), _COND + ("code", "coding", 0),
    _COND + ("code", "coding", 0, "system"), _COND + ("code", "coding", 0, "code"),
}


def unrelated_paths(body: dict) -> list[Path]:
    out = []
    for p in paths(body):
        inside = p[:len(_DRAFT)] == _DRAFT or p[:len(_COND)] == _COND
        if not inside or len(p) == len(_DRAFT) or p in NEEDED:
            continue
        if p[:len(_COND)] == _COND and len(p) > len(_COND) and p[len(_COND)] in ("clinicalStatus",
                                                                                 "verificationStatus"):
            continue
        out.append(p)
    return out


ORDER_SIGN = base_request("order-sign")
UNRELATED = unrelated_paths(ORDER_SIGN)


@FUZZ
@given(path=st.sampled_from(UNRELATED), value=values)
@example(path=_DRAFT + ("medicationCodeableConcept", "coding", 0, "display"), value="")
def test_benzodiazepine_card_survives_any_unrelated_value(fuzz_client, path, value):
    body = replaced(ORDER_SIGN, path, value)
    resp = post(fuzz_client, body)
    doc = assert_well_answered(resp)
    if resp.status_code == 400 and "nesting deeper than" in doc["issue"][0]["diagnostics"]:
        return  # the whole request is refused (PTSD_CDS_MAX_JSON_DEPTH): an error, never a silent 200
    assert resp.status_code == 200, doc
    topics = [c["source"]["topic"]["code"] for c in doc.get("cards", [])]
    assert "benzodiazepine-avoid" in topics, (path, value)


def test_the_unmangled_request_gets_the_card(fuzz_client):
    """The control for the property above: the request it mangles gets the card today."""
    doc = assert_well_answered(post(fuzz_client, ORDER_SIGN))
    assert [c["source"]["topic"]["code"] for c in doc["cards"]] == ["benzodiazepine-avoid"]
    assert len(UNRELATED) > 15  # display, text, subject, authoredOn, dosage..., recordedDate...
