# syntax=docker/dockerfile:1
#
# The checkout strangler's proxy: `strangler serve` (docs/deploy.md).
#
#   docker build -t checkout-strangler .
#   docker run --read-only -p 8080:8080 -p 9090:9090 \
#       -e STRANGLER_CORE_URL=http://core:8081 -e STRANGLER_LEGACY_URL=http://legacy:8082 \
#       -e STRANGLER_ADMIN_PORT=9090 checkout-strangler
#
# Without a Docker daemon: scripts/build-image.sh (buildah, a local Debian base).
# The same image runs the demo backends: `python -m checkout_core` and `python -m legacy_stub`
# as the command (the Helm chart's demo.* values do that).

ARG PYTHON_IMAGE=python:3.11-slim

# -- builder: wheels of the project and of every dependency ----------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY control ./control
COPY guardrails ./guardrails
COPY admin ./admin
COPY checkout_core ./checkout_core
COPY legacy_stub ./legacy_stub
COPY cli ./cli
COPY logformat ./logformat
COPY otelsetup ./otelsetup
COPY shadow ./shadow
# A venv, not the system pip: a Debian python3 refuses system installs (PEP 668).
# With the [otel] extra: tracing stays off until STRANGLER_OTEL=on (docs/deploy.md, Tracing).
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --wheel-dir /wheels "/src[otel]"

# -- the image: the wheels installed into a venv, no compilers, no build tools ----------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="checkout-strangler" \
      org.opencontainers.image.description="Routing proxy that strangles a legacy checkout onto a new checkout core" \
      org.opencontainers.image.source="https://example.invalid/checkout-strangler"
# State (the SQLite control store, the last known state cache) lives under one writable
# volume; the rest of the file system may be read-only, so Python writes no .pyc at run time
# (they are compiled at install time instead).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/strangler/bin:$PATH \
    HOME=/var/lib/strangler \
    STRANGLER_DB_PATH=/var/lib/strangler/strangler.sqlite3 \
    STRANGLER_STATE_CACHE=/var/lib/strangler/last-known-state.json \
    CHECKOUT_CORE_DB_PATH=/var/lib/strangler/checkout_core.sqlite3
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python3 -m venv /opt/strangler \
    && /opt/strangler/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
        --find-links /wheels "checkout-strangler[otel]" \
    && /opt/strangler/bin/pip uninstall --yes --no-cache-dir --disable-pip-version-check pip setuptools \
    && mkdir -p /var/lib/strangler /etc/strangler/rules \
    && chown 65532:65532 /var/lib/strangler \
    && chmod 0750 /var/lib/strangler
COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/strangler-healthcheck
USER 65532:65532
WORKDIR /var/lib/strangler
VOLUME ["/var/lib/strangler"]
# 8080: checkout traffic; 9090: the admin surface when STRANGLER_ADMIN_PORT=9090
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["strangler-healthcheck", "/livez"]
ENTRYPOINT ["strangler", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8080", "--admin-host", "0.0.0.0"]
