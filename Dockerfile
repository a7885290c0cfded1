# ptsd-cds: slim image, non-root, gunicorn.
# Reproducible: every runtime dependency is pinned in constraints.txt (scripts/pin_constraints.py).
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# nginx in front of gunicorn (`ptsd-cds serve`): slow clients never hold a worker thread (issue #11).
RUN apt-get update && apt-get install -y --no-install-recommends nginx && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY cds_service ./cds_service
COPY cards ./cards
RUN pip install -c constraints.txt . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin ptsd \
    && mkdir -p /data && chown ptsd /data

# Production defaults: authentication required (mount a trusted-issuer file), data under /data.
ENV PTSD_CDS_ENV=production \
    PTSD_CDS_AUTH=required \
    PTSD_CDS_CARDS_DIR=/app/cards \
    PTSD_CDS_DATABASE=/data/ptsd-cds.sqlite3 \
    PTSD_CDS_BIND=0.0.0.0:8080

USER ptsd
EXPOSE 8080
VOLUME ["/data"]
# Follows PTSD_CDS_BIND (a wildcard address is probed on loopback): see `ptsd-cds healthcheck`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["ptsd-cds", "healthcheck"]
# nginx in front of gunicorn; the start-up checks and warnings run once, in the serve process.
CMD ["ptsd-cds", "serve"]
