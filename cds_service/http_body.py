"""Reading an outbound HTTP response body with a size cap (FHIR servers, JWKS URLs)."""

from __future__ import annotations

import requests


class BodyTooLarge(Exception):
    """The response announced or delivered more bytes than the cap."""


def read_capped(resp: requests.Response, cap: int, chunk_size: int = 16 * 1024) -> bytes:
    """The body of a streamed response, refusing more than ``cap`` bytes.

    Raises BodyTooLarge, or requests.RequestException when the body cannot be read.
    """
    declared = resp.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > cap:
        raise BodyTooLarge
    body = bytearray()
    for chunk in resp.iter_content(chunk_size=chunk_size):
        body += chunk
        if len(body) > cap:
            raise BodyTooLarge
    return bytes(body)
