# syntax=docker/dockerfile:1
# peerlink image: API (`peerlink serve`), worker (`peerlink worker`) and migrations
# (`peerlink db upgrade`) from one image; docker-compose.yml runs each as its own service.
#
# The base is pinned by exact patch tag and by the digest of its multi-architecture index.
# To move it: `docker buildx imagetools inspect python:3.11.<patch>-slim-bookworm` prints the
# index digest; change both here in one commit.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PEERLINK_MODE=production PEERLINK_HOST=0.0.0.0 PEERLINK_PORT=8000 \
    PYTHONPATH=/app

# The dependency layer comes first: it is rebuilt only when the lock changes, never for a code
# change. Every package (and its hash) comes from requirements.lock; nothing is resolved here.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes --no-deps -r /tmp/requirements.lock && rm /tmp/requirements.lock

RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin peerlink
WORKDIR /app
# The code runs from /app (PYTHONPATH), beside alembic/ and alembic.ini; the `peerlink`
# command is `python -m app.cli`, so no build backend runs in the image.
COPY alembic.ini ./
COPY alembic ./alembic
COPY app ./app
RUN printf '#!/bin/sh\nexec python -m app.cli "$@"\n' > /usr/local/bin/peerlink \
    && chmod 0755 /usr/local/bin/peerlink \
    && python -m compileall -q app \
    && mkdir -p /app/var /run/peerlink-metrics \
    && chown peerlink:peerlink /app/var /run/peerlink-metrics

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2)"]
# Migrations are a deployment step of their own (`peerlink db upgrade`, the compose `migrate`
# service): API replicas starting together never race on them.
CMD ["peerlink", "serve", "--no-migrate", "--workers", "2"]
