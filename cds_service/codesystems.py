"""The project's own code systems (canonical URIs in one place), and the site's map of outgoing codes.

Outgoing code map
-----------------
Referrals and drafts the cards suggest carry the codes this service knows: a standard code where a
verified one exists (SNOMED CT 18512000 "Individual psychotherapy" on the PE/CPT/EMDR referrals,
75516001 "Psychotherapy" on the image rehearsal therapy referral, RxNorm on drafts) and the
project's own code (``PSYCHOTHERAPY``, ``REFERRAL``) where none identifies the therapy. A site whose
EHR orders these under local codes lists them in the ``outgoing`` section of its site code map
(setting ``PTSD_CDS_SITE_CODE_MAP``; example ``fixtures/site-code-map.example.json``)::

    "outgoing": [
      {"ours": {"system": "http://ptsd-cds.org/fhir/CodeSystem/trauma-focused-psychotherapy",
                "code": "prolonged-exposure"},
       "local": {"system": "http://hospital.example.org/orderables", "code": "REF-PE",
                 "display": "Referral: prolonged exposure therapy"}}
    ]

Every CodeableConcept of a suggested resource that holds an ``ours`` coding then also holds the
``local`` codings, first (EHRs that read only the first coding get their own); the service's
codings and text stay, so nothing is lost. One ``ours`` code may map to several local codings.
``procedures`` (local codes read from the record) and ``outgoing`` are separate on purpose: a
site's code for a performed session is rarely its code for ordering a referral.
Hand-written because it is a dozen lines of dict walking on the service's own small resources.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

BASE = "http://ptsd-cds.org/fhir/CodeSystem"

# source.topic of every card: which kind of card it is (codes listed in cards/*.toml).
CARD_TOPIC = f"{BASE}/card-topic"
# Trauma-focused psychotherapies: prolonged-exposure | cognitive-processing-therapy | emdr, and
# image-rehearsal-therapy (nightmares). No standard code identifies any of them (CODES.md §7a,
# CODES-2.md §8a): referrals carry this code, the nearest verified SNOMED CT code and text.
PSYCHOTHERAPY = f"{BASE}/trauma-focused-psychotherapy"
# Referrals without a standard code: specialised-ptsd-programme (the step-6 referral).
REFERRAL = f"{BASE}/referral"
REFERRAL_CODES = {"specialised-ptsd-programme": "Referral to a specialised PTSD treatment programme"}
# Override reasons offered on safety cards.
OVERRIDE_REASON = f"{BASE}/override-reason"

OutgoingMap = Mapping[tuple[str, str], tuple[dict[str, str], ...]]
_ENTRY_KEYS = {"ours", "local", "note"}
_CODING_KEYS = {"system", "code", "display"}


def parse_outgoing_map(data: Any, where: str = "site code map") -> dict[tuple[str, str], tuple[dict[str, str], ...]]:
    """The ``outgoing`` section of a parsed site code map: {(system, code): (local coding, ...)}.
    No section: empty. Raises ValueError naming the entry for anything malformed."""
    if not isinstance(data, Mapping) or "outgoing" not in data:
        return {}
    entries = data["outgoing"]
    if not isinstance(entries, list):
        raise ValueError(f"{where}: 'outgoing' must be a list")
    mapping: dict[tuple[str, str], tuple[dict[str, str], ...]] = {}
    for i, entry in enumerate(entries):
        here = f"{where}: outgoing[{i}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{here}: must be an object with 'ours' and 'local'")
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise ValueError(f"{here}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
        ours = _coding(entry.get("ours"), f"{here}.ours", display_allowed=False)
        local = _coding(entry.get("local"), f"{here}.local", display_allowed=True)
        key = (ours["system"], ours["code"])
        if local not in mapping.get(key, ()):
            mapping[key] = mapping.get(key, ()) + (local,)
    return mapping


def _coding(value: Any, where: str, *, display_allowed: bool) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: must be an object with system and code")
    allowed = _CODING_KEYS if display_allowed else _CODING_KEYS - {"display"}
    unknown = set(value) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    out = {}
    for name in ("system", "code", "display"):
        if name not in value:
            continue
        if not isinstance(value[name], str) or not value[name].strip():
            raise ValueError(f"{where}: '{name}' must be a non-empty string")
        out[name] = value[name].strip()
    if "system" not in out or "code" not in out:
        raise ValueError(f"{where}: 'system' and 'code' are required")
    out["system"] = out["system"].rstrip("/")
    return out


def load_outgoing_map(path: str | None) -> dict[tuple[str, str], tuple[dict[str, str], ...]]:
    """The outgoing map of a site code map file (None: empty). Raises ValueError."""
    if not path:
        return {}
    return parse_outgoing_map(read_site_code_map(path), f"site code map {path}")


def read_site_code_map(path: str) -> Any:
    """The JSON of a site code map file (both its sections are read from it). Raises ValueError
    naming the file and what is wrong, never a traceback."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as err:
        raise ValueError(f"site code map {path}: cannot read file ({err.strerror or err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"site code map {path}: not valid JSON (line {err.lineno}: {err.msg})") from None


def map_outgoing(cards: Iterable[dict[str, Any]], mapping: OutgoingMap) -> None:
    """Add the site's local codings to every suggested resource of ``cards`` (in place)."""
    if not mapping:
        return
    for card in cards:
        for suggestion in card.get("suggestions", ()):
            for action in suggestion.get("actions", ()):
                if isinstance(action.get("resource"), dict):
                    _map_concepts(action["resource"], mapping)


def _map_concepts(value: Any, mapping: OutgoingMap) -> None:
    if isinstance(value, dict):
        coding = value.get("coding")
        if isinstance(coding, list):
            local: list[dict[str, str]] = []
            for c in coding:
                if isinstance(c, dict):
                    for extra in mapping.get((str(c.get("system", "")).rstrip("/"), str(c.get("code", ""))), ()):
                        if extra not in coding and extra not in local:
                            local.append(dict(extra))
            if local:
                value["coding"] = local + coding
        for item in value.values():
            _map_concepts(item, mapping)
    elif isinstance(value, list):
        for item in value:
            _map_concepts(item, mapping)
