"""ptsd-cds: a CDS Hooks 2.0 service for PTSD treatment guidance.

``create_app(config=None)`` builds the Flask application (gunicorn: ``"cds_service:create_app()"``).
"""

from __future__ import annotations

__version__ = "0.4.0"


def create_app(config=None):
    from cds_service.app import create_app as _create_app

    return _create_app(config)


__all__ = ["create_app", "__version__"]
