# peerlink API image: slim, non-root; migrates, then serves with uvicorn.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PEERLINK_MODE=production PEERLINK_HOST=0.0.0.0 PEERLINK_PORT=8000 \
    PYTHONPATH=/app
RUN useradd --system --uid 10001 --home /app peerlink
WORKDIR /app
COPY --from=build /install /usr/local
COPY alembic.ini ./
COPY alembic ./alembic
# /app comes first on the path, so the code runs from here, beside alembic/ and alembic.ini.
COPY app ./app
RUN mkdir -p /app/var && chown peerlink /app/var
USER peerlink
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/livez').status == 200 else 1)"
# `serve` applies migrations first, then starts uvicorn (workers: PEERLINK_WORKERS via --workers).
CMD ["peerlink", "serve", "--workers", "2"]
