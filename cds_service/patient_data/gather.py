"""Patient data for one hook call: prefetch first, then the client's FHIR server (CHECKLIST PF-13..17).

For each prefetch key the service declared:

* present with a resource or Bundle -> used (a Bundle with a ``next`` link is paged on the
  FHIR server when one was given; otherwise the data is incomplete);
* present and ``null`` -> "no data": an empty result, not an error (PF-13);
* present as an OperationOutcome -> the client could not get the data; the service does not
  repeat the query (PF-13: sent "to prevent ... an unneeded follow-up query");
* absent (or not a JSON object) -> the service runs the template itself on ``fhirServer``
  (all missing keys concurrently, within one time budget).

Data that a rule needs and that cannot be had (no prefetch and no fhirServer, a failed query,
an incomplete result) ends the call with HTTP 412 and an OperationOutcome naming what is missing
and why (PF-16). Optional data (the Patient resource) that cannot be had is only noted.

Prefetch values arrive as JSON text (``json_body.parse_hook_body``). A Bundle's entries are split
here reading only each resource's ``resourceType``, ``id`` and whether it has a
``medicationReference``; its Conditions, MedicationRequests and Procedures stay text
(``record.RawResource``) for the facts stage to decode once into its views. Anything of an odd
shape is parsed whole and takes the parsed-JSON path (``record.parse_tolerant``).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec

from cds_service.errors import ApiError
from cds_service.patient_data.fhir_client import Deadline, FhirClient, bundle_resources, next_link
from cds_service.patient_data.outbound import (FhirAddressRefused, FhirFetchError, FhirServerRefused,
                                               OutboundPolicy)
from cds_service.facts.model import NEVER_TAKEN_STATUSES, ORDERS_BEING_PLACED
from cds_service.patient_data.record import (PatientRecord, RawResource, Resource, as_json, parse_tolerant,
                                             relative_reference)
from cds_service.services import PREFETCH_KEYS, PrefetchKey

log = logging.getLogger("ptsd_cds.patient_data")


class DataUnavailable(ApiError):
    """HTTP 412: required patient data could be had neither from prefetch nor from the FHIR server."""

    def __init__(self, problems: list[str]):
        super().__init__(
            412,
            "Required patient data is unavailable: " + "; ".join(problems),
            code="not-found",
        )
        self.problems = problems


@dataclass
class KeyResult:
    key: PrefetchKey
    resources: list[Resource]
    problem: str | None = None  # why the data could not be had (safe to return: no PHI)


def fill_template(template: str, context: dict[str, Any]) -> str:
    """Replace ``{{context.X}}`` tokens with URL-encoded context values (2.0 tokens only)."""
    out = template
    for name in ("patientId", "encounterId", "userId"):
        token = "{{context.%s}}" % name
        if token in out:
            value = context.get(name)
            if not isinstance(value, str):
                raise ValueError(f"context.{name} is needed by the prefetch template")
            out = out.replace(token, quote(value, safe="/"))
    return out


def gather_record(request_data: dict[str, Any], *, identity, settings, policy: OutboundPolicy,
                  session_factory=None) -> PatientRecord:
    """Build the PatientRecord for a validated hook request, or raise DataUnavailable / ApiError."""
    context = request_data["context"]
    prefetch = request_data.get("prefetch") or {}
    record = PatientRecord(patient_id=context["patientId"])
    _add_draft_orders(record, context)

    fhir_server: str | None = request_data.get("fhirServer")
    token = (request_data.get("fhirAuthorization") or {}).get("access_token")
    deadline = Deadline(settings.fhir_total_budget)
    client: FhirClient | None = None

    def get_client() -> FhirClient | None:
        nonlocal client
        if client is None and fhir_server:
            try:
                policy.check_fhir_server(fhir_server, identity)
            except FhirServerRefused as exc:
                raise ApiError(400, f"fhirServer refused: {exc}", code="security",
                               expression=["fhirServer"]) from None
            session = session_factory() if session_factory else None
            client = FhirClient(fhir_server, token=token, policy=policy, settings=settings,
                                deadline=deadline, session=session)
        return client

    results: list[KeyResult] = []
    to_fetch: list[PrefetchKey] = []
    for key in PREFETCH_KEYS:
        value = _prefetch_value(prefetch.get(key.key))
        if key.key in prefetch and value is None:
            results.append(KeyResult(key, []))  # null: the client has no such data
            continue
        if isinstance(value, _BundleText):
            results.append(_paged(key, value.resources(), next_link({"link": value.link}), get_client))
        elif isinstance(value, dict):
            results.append(_from_prefetch(key, value, get_client))
        else:
            if key.key in prefetch:
                log.info("prefetch key %s is not a JSON object; querying the FHIR server", key.key)
            to_fetch.append(key)

    if to_fetch:
        fhir = get_client()
        if fhir is None:
            results.extend(KeyResult(k, [], "not prefetched and no fhirServer was given") for k in to_fetch)
        else:
            results.extend(_fetch_all(fhir, to_fetch, context, settings))

    problems = [f"{r.key.key} ({r.key.about}): {r.problem}" for r in results if r.problem and r.key.required]
    if problems:
        raise DataUnavailable(problems)
    for r in results:
        if r.problem:
            record.missing.append(r.key.key)
            log.info("optional data %s unavailable: %s", r.key.key, r.problem)
    _distribute(record, [resource for r in results for resource in r.resources])

    _resolve_medications(record, get_client if fhir_server else None, settings, request_data.get("hook"))
    return record


# --- prefetch values kept as JSON text by the body parser (json_body.parse_hook_body) -----------
_NULL = msgspec.Raw(b"null")


class _Entry(msgspec.Struct):
    resource: msgspec.Raw = _NULL  # (msgspec has no "Raw or None"; a missing resource reads as null)
    search: Any = None


class _BundleText(msgspec.Struct):
    """A prefetch Bundle whose entries' resources are still JSON text."""

    resourceType: Any = None
    link: Any = None
    entry: list[_Entry] | None = None

    def resources(self) -> list[Any]:
        """Like ``fhir_client.bundle_resources``: entries without a resource object (or with
        ``search.mode`` "outcome") are left out."""
        out = []
        for entry in self.entry or ():
            if isinstance(entry.search, dict) and entry.search.get("mode") == "outcome":
                continue
            resource = _resource(entry.resource)
            if resource is not None:
                out.append(resource)
        return out


class _Head(msgspec.Struct):
    resourceType: Any = None
    id: Any = None
    medicationReference: msgspec.Raw = _NULL  # only whether it is there (_orders_to_identify)


_BUNDLE_TEXT = msgspec.json.Decoder(_BundleText)
_HEAD = msgspec.json.Decoder(_Head)
# Read straight from their text by the facts stage (typed views): the bulk of a long record.
_KEPT_AS_TEXT = frozenset({"Condition", "MedicationRequest", "Procedure"})


def _resource(raw: msgspec.Raw) -> Any:
    """One Bundle entry's resource: a RawResource, or a parsed dict for the few resource types the
    facts stage reads as JSON; None when it is not an object with a string ``resourceType``."""
    parsed = None
    try:
        head = _HEAD.decode(raw)
        rtype, rid, references = head.resourceType, head.id, head.medicationReference is not _NULL
    except msgspec.ValidationError:  # not an object, or a number msgspec will not hold in it
        parsed = parse_tolerant(raw)
        if not isinstance(parsed, dict):
            return None
        rtype, rid, references = parsed.get("resourceType"), parsed.get("id"), "medicationReference" in parsed
    if not isinstance(rtype, str):
        return None
    if rtype in _KEPT_AS_TEXT or rtype not in _BUCKETS_AND_SINGLES:  # other types: nothing reads them
        return RawResource(rtype, rid if isinstance(rid, str) else None, raw, references_medication=references,
                           parsed=parsed)
    return parse_tolerant(raw) if parsed is None else parsed


def _prefetch_value(value: Any) -> Any:
    """A prefetch value as the loop above reads it: a ``_BundleText`` for a Bundle kept as text,
    otherwise parsed JSON (None for null). Values already parsed are returned unchanged."""
    if not isinstance(value, msgspec.Raw):
        return value
    try:
        bundle = _BUNDLE_TEXT.decode(value)
    except msgspec.ValidationError:  # not an object, or entries of an odd shape: parse it whole
        bundle = None
    if bundle is not None and bundle.resourceType == "Bundle":
        return bundle
    return parse_tolerant(value)


def _from_prefetch(key: PrefetchKey, value: Resource, get_client) -> KeyResult:
    rtype = value.get("resourceType")
    if rtype == "OperationOutcome":
        return KeyResult(key, [], "the client reported an error for this prefetch key")
    if rtype != "Bundle":
        return KeyResult(key, [value])
    return _paged(key, bundle_resources(value), next_link(value), get_client)


def _paged(key: PrefetchKey, resources: list[Any], next_url: str | None, get_client) -> KeyResult:
    """A prefetch Bundle's resources, and those of its further pages (next link) from fhirServer."""
    if next_url:
        fhir = get_client()
        if fhir is None:
            return KeyResult(key, resources, "the prefetch Bundle is paged (next link) and no fhirServer was given")
        try:
            more = fhir.collect_pages(_only_next(next_url), pages_before=1)
        except FhirFetchError as exc:
            return KeyResult(key, resources, f"paging the prefetch Bundle failed: {exc}")
        resources = resources + more.resources
    return KeyResult(key, resources)


def _only_next(next_url: str) -> Resource:
    """A stand-in page that holds only the next link, so collect_pages fetches the rest."""
    return {"resourceType": "Bundle", "link": [{"relation": "next", "url": next_url}]}


def _fetch_all(fhir: FhirClient, keys: list[PrefetchKey], context: dict[str, Any], settings) -> list[KeyResult]:
    def fetch(key: PrefetchKey) -> KeyResult:
        query = fill_template(key.template, context)
        try:
            if "?" in query:
                return KeyResult(key, fhir.search(query).resources)
            resource = fhir.read(query)
            return KeyResult(key, [resource] if resource else [])
        except FhirAddressRefused as exc:
            # The fhirServer's name resolves to an address this service never calls
            # (link-local, cloud metadata...): a bad request, not missing data.
            raise ApiError(400, f"fhirServer refused: {exc}", code="security",
                           expression=["fhirServer"]) from None
        except FhirFetchError as exc:
            return KeyResult(key, [], f"FHIR query failed: {exc}")

    if len(keys) == 1:
        return [fetch(keys[0])]
    with ThreadPoolExecutor(max_workers=min(settings.fhir_max_workers, len(keys))) as pool:
        return list(pool.map(fetch, keys))


_BUCKETS = {
    "Condition": "conditions",
    "MedicationRequest": "medication_requests",
    "Procedure": "procedures",
}
_BUCKETS_AND_SINGLES = frozenset(_BUCKETS) | {"Patient", "Medication"}


def _distribute(record: PatientRecord, resources: list[Any]) -> None:
    """Put each resource where the facts stage looks for it (by resourceType), once per id."""
    seen: set[tuple[str, str]] = set()
    for resource in resources:
        if isinstance(resource, RawResource):
            rtype, rid = resource.resource_type, resource.id
        else:
            rtype, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(rtype, str):
            continue  # not a FHIR resource
        if not isinstance(rid, str):
            rid = None  # a malformed id: kept (the facts stage decides), never used as a key
        if rtype == "Patient":
            record.patient = resource
        elif rtype == "Medication" and rid is not None:
            record.medications[f"Medication/{rid}"] = resource
        elif rtype in _BUCKETS:
            if rid is not None:
                if (rtype, rid) in seen:
                    continue  # the same resource twice (e.g. repeated across search pages)
                seen.add((rtype, rid))
            getattr(record, _BUCKETS[rtype]).append(resource)


def _add_draft_orders(record: PatientRecord, context: dict[str, Any]) -> None:
    draft = context.get("draftOrders")
    if isinstance(draft, dict):
        record.draft_orders = bundle_resources(draft)
        # Medications sent alongside the orders (e.g. for medicationReference) are usable too.
        for resource in record.draft_orders:
            if resource.get("resourceType") == "Medication" and isinstance(resource.get("id"), str):
                record.medications[f"Medication/{resource['id']}"] = resource
    selections = context.get("selections")
    if isinstance(selections, list):
        record.selections = [s for s in selections if isinstance(s, str)]


def medication_key(reference: str) -> str | None:
    """``Medication/<id>`` for a relative, absolute or versioned reference to a Medication, else None."""
    key = relative_reference(reference)
    return key if key.startswith("Medication/") and "#" not in key else None


def _orders_to_identify(record: PatientRecord, hook: str | None) -> list[Resource]:
    """MedicationRequests whose drug the rules read: the record's orders that were taken, and the
    drafts being placed that the hook checks (see rules.common.ORDERS_BEING_PLACED)."""
    def ordinary(r: Resource) -> bool:
        return r.get("resourceType") == "MedicationRequest" and r.get("doNotPerform") is not True

    def status(r: Resource) -> str | None:
        value = r.get("status")
        return value if isinstance(value, str) else None  # a malformed status is read as absent

    drafts = record.selected_draft_orders() if hook == "order-select" else record.draft_orders
    drafts = [r for r in drafts if ordinary(r) and (status(r) is None or status(r) in ORDERS_BEING_PLACED)]
    # An order kept as text is only parsed here when it may hold a medicationReference: without
    # one there is nothing to fetch and nothing unidentified (see _unidentified).
    orders = [as_json(r) for r in record.medication_requests
              if not isinstance(r, RawResource) or r.references_medication]
    taken = [r for r in orders if ordinary(r) and status(r) not in NEVER_TAKEN_STATUSES]
    return taken + drafts


def _resolve_medications(record: PatientRecord, get_client, settings, hook: str | None = None) -> None:
    """Fetch Medications named by ``medicationReference`` that are neither contained nor present.

    A reference is fetched from ``fhirServer`` when it is relative or lies under it. An order whose
    drug still cannot be identified (reference unresolved and no ``display`` to read a name from)
    makes the data incomplete: HTTP 412, because an unidentified drug could be a benzodiazepine.
    """
    orders = _orders_to_identify(record, hook)
    wanted: dict[str, str] = {}  # Medication/id -> reference as written (for messages)
    for request in orders:
        ref = request.get("medicationReference")
        reference = ref.get("reference") if isinstance(ref, dict) else None
        key = medication_key(reference) if isinstance(reference, str) else None
        if key and key not in record.medications:
            wanted[key] = reference
    fhir = None
    if wanted and get_client is not None:
        try:
            fhir = get_client()
        except ApiError as exc:  # fhirServer not allowed: unresolved references are judged below
            log.info("Medication references not fetched: %s", exc.message)
    if fhir is not None:
        def read(key: str) -> tuple[str, Resource | None]:
            reference = wanted[key]
            if "://" in reference and not reference.startswith(fhir.base):
                return key, None  # an absolute reference to another server is never fetched
            try:
                return key, fhir.read("Medication/" + quote(key.split("/", 1)[1], safe=""))
            except FhirFetchError as exc:
                log.info("Medication reference could not be read: %s", exc)
                return key, None

        with ThreadPoolExecutor(max_workers=min(settings.fhir_max_workers, len(wanted))) as pool:
            for key, resource in pool.map(read, sorted(wanted)):
                if resource and resource.get("resourceType") == "Medication":
                    record.medications[key] = resource
    # A draft order whose drug stays unidentified gets the order-not-checked card from the rules
    # (the clinician sees it); a 412 would show nothing. Only the record's own orders — history
    # the rules need complete — make the data incomplete.
    drafts = {id(d) for d in record.draft_orders}
    taken = [r for r in orders if id(r) not in drafts]
    unidentified = [f"{r.get('resourceType')}/{r.get('id')}" for r in taken if _unidentified(r, record)]
    if unidentified:
        raise DataUnavailable([
            f"the drug of {', '.join(unidentified[:5])}{' …' if len(unidentified) > 5 else ''} cannot be "
            "identified: its medicationReference could not be resolved (not contained, not prefetched, "
            "not readable on fhirServer) and has no display"])


def _unidentified(request: Resource, record: PatientRecord) -> bool:
    """A Medication reference that prefetch or fhirServer should have supplied, and did not.

    References that can never be fetched (contained ``#id``, ``urn:uuid:``, identifier-only, another
    resource type) are left to the facts stage, which reads a display or skips and counts the order:
    a 412 for them would fail every call for that patient, for good.
    """
    if "medicationCodeableConcept" in request:
        return False
    ref = request.get("medicationReference")
    if not isinstance(ref, dict) or (isinstance(ref.get("display"), str) and ref["display"].strip()):
        return False
    reference = ref.get("reference")
    key = medication_key(reference) if isinstance(reference, str) else None
    return key is not None and key not in record.medications
