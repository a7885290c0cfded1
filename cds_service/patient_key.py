"""Keyed patient hashes: the only form in which the store keeps a patient's identity.

``patient_key(secret, iss, fhir_server, patient_id)`` is HMAC-SHA256 (hex) over the client's
issuer, its FHIR server and the patient id, so the same id at two EHRs gives two keys and a key
cannot be reversed or recomputed without the secret.

The secret (``resolve_secret``): ``PTSD_CDS_PATIENT_KEY_SECRET`` when set (required with the
PostgreSQL store, since every instance must compute the same key); otherwise, with the embedded
SQLite store on one host, a random 32-byte secret generated once and kept in that 0600 file.
"""

from __future__ import annotations

import hashlib
import hmac

SECRET_NAME = "patient_key"


def patient_key(secret: bytes, iss: str | None, fhir_server: str | None, patient_id: str) -> str:
    """HMAC-SHA256 hex of (issuer, FHIR server, patient id); fields length-prefixed, so unambiguous."""
    parts = [(iss or "").encode("utf-8", "surrogatepass"),
             (fhir_server or "").rstrip("/").encode("utf-8", "surrogatepass"),
             patient_id.encode("utf-8", "surrogatepass")]
    message = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def resolve_secret(settings, store) -> bytes:
    """The HMAC key: the configured secret, else one generated and kept in the local SQLite store."""
    if settings.patient_key_secret:
        return settings.patient_key_secret.encode("utf-8")
    local_secret = getattr(store, "local_secret", None)
    if local_secret is None:  # validation requires the setting with PostgreSQL; be explicit anyway
        raise RuntimeError("PTSD_CDS_PATIENT_KEY_SECRET is required with this store")
    return local_secret(SECRET_NAME)
