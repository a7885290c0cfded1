"""Queries to the client's FHIR server: reads, searches with paging, under a time budget.

All HTTP goes through ``OutboundPolicy`` (which servers may be called, token only to that
server, response size cap). The access token lives only in this object for the duration of one
hook call; it is never logged or stored.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests

from cds_service.patient_data.outbound import FhirFetchError, OutboundPolicy

Resource = dict[str, Any]


@dataclass
class SearchResult:
    resources: list[Resource]
    pages: int


class Deadline:
    """The time left of one hook call's FHIR budget."""

    def __init__(self, seconds: float):
        self.expires = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.expires - time.monotonic()


class FhirClient:
    """One hook call's queries to one FHIR server.

    Besides the time budget (``Deadline``), the call as a whole may read at most
    ``settings.fhir_max_total_bytes`` body bytes and ``settings.fhir_max_resources`` resources
    across all its FHIR responses (finding 6 of issue #11: 20 pages of 19 MiB took a worker to
    780 MB). Each response is read with a cap of what is left of the total, so with
    ``fhir_max_workers`` queries in flight at most that many partial responses overshoot.
    """

    def __init__(self, base: str, *, token: str | None, policy: OutboundPolicy, settings,
                 deadline: Deadline, session: requests.Session | None = None):
        self.base = base.rstrip("/") + "/"
        self._token = token
        self.policy = policy
        self.settings = settings
        self.deadline = deadline
        self.session = session or requests.Session()
        self.session.trust_env = False  # no proxies or .netrc credentials from the environment
        self._count_lock = threading.Lock()
        self.bytes_read = 0
        self.resources_read = 0

    def __repr__(self) -> str:  # never show the token
        return f"FhirClient(base={self.base!r})"

    def _timeout(self) -> tuple[float, float]:
        left = self.deadline.remaining()
        if left <= 0.05:
            raise FhirFetchError("time budget for FHIR queries used up")
        return (min(self.settings.fhir_connect_timeout, left), min(self.settings.fhir_read_timeout, left))

    def get(self, url: str) -> Resource:
        absolute = urljoin(self.base, url)
        max_total = self.settings.fhir_max_total_bytes
        with self._count_lock:
            left = max_total - self.bytes_read
        if left <= 0:
            raise FhirFetchError("FHIR responses of this call exceed PTSD_CDS_FHIR_MAX_TOTAL_BYTES", size_exceeded=True)
        # Optional per-call statistics (count, time, errors) that the HTTP layer attaches to the
        # session it hands in (cds_service.metrics.FhirStats); None outside a served call.
        observe = getattr(self.session, "ptsd_observer", None)
        started = time.perf_counter()
        try:
            data, size = self.policy.get_json_sized(self.session, absolute, base=self.base, token=self._token,
                                                    timeout=self._timeout(), deadline=self.deadline.expires,
                                                    max_bytes=left)
        except FhirFetchError as exc:
            if observe is not None:
                observe(time.perf_counter() - started, str(exc))
            raise
        if observe is not None:
            observe(time.perf_counter() - started)
        with self._count_lock:
            self.bytes_read += size
            over = self.bytes_read > max_total
        if over:
            raise FhirFetchError("FHIR responses of this call exceed PTSD_CDS_FHIR_MAX_TOTAL_BYTES", size_exceeded=True)
        return data

    def count_resources(self, n: int) -> None:
        """Add ``n`` resources read from the server; FhirFetchError past ``fhir_max_resources``."""
        with self._count_lock:
            self.resources_read += n
            over = self.resources_read > self.settings.fhir_max_resources
        if over:
            raise FhirFetchError(f"more than {self.settings.fhir_max_resources} resources from the FHIR server "
                                 "in one call (PTSD_CDS_FHIR_MAX_RESOURCES)", size_exceeded=True)

    def read(self, relative: str) -> Resource | None:
        """A FHIR read (``Patient/123``); None when the server says 404/410 (no such resource)."""
        try:
            resource = self.get(relative)
            self.count_resources(1)
            return resource
        except FhirFetchError as exc:
            if exc.status in (404, 410):
                return None
            raise

    def search(self, relative: str) -> SearchResult:
        """A FHIR search, following ``next`` links up to ``fhir_max_pages`` pages."""
        page = self.get(relative)
        return self.collect_pages(page)

    def collect_pages(self, bundle: Resource, *, pages_before: int = 0) -> SearchResult:
        """Resources of a searchset Bundle and all its following pages (next links)."""
        resources: list[Resource] = []
        pages = pages_before
        seen: set[str] = set()
        while True:
            if bundle.get("resourceType") == "OperationOutcome":
                raise FhirFetchError("FHIR server answered the search with an OperationOutcome")
            if bundle.get("resourceType") != "Bundle":
                raise FhirFetchError("FHIR search did not answer with a Bundle")
            pages += 1
            found = bundle_resources(bundle)
            self.count_resources(len(found))
            resources.extend(found)
            next_url = next_link(bundle)
            if not next_url:
                return SearchResult(resources, pages)
            if pages >= self.settings.fhir_max_pages:
                raise FhirFetchError(f"more than {self.settings.fhir_max_pages} pages of results")
            absolute = urljoin(self.base, next_url)
            if not absolute.startswith(self.base):
                raise FhirFetchError("a next link points outside the fhirServer; not followed")
            if absolute in seen:
                raise FhirFetchError("next links loop")
            seen.add(absolute)
            bundle = self.get(absolute)


def next_link(bundle: Resource) -> str | None:
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


def bundle_resources(bundle: Resource) -> list[Resource]:
    """The resources of a Bundle's entries; entries without a resource object are skipped.

    Entries with ``search.mode == "outcome"`` (OperationOutcome warnings) are left out.
    """
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return []
    out: list[Resource] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            continue
        search = entry.get("search")
        if isinstance(search, dict) and search.get("mode") == "outcome":
            continue
        out.append(resource)
    return out
