# The ledger service image. On its own it is safe: `ledger serve` on the embedded default
# (SQLite under /data, projections in-process); docker-compose.yml runs the API, the
# projection worker and the delivery worker as separate services over KurrentDB and
# PostgreSQL. Python dependencies come from requirements.lock (exact versions, hashes).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LEDGER_DATA_DIR=/data

WORKDIR /srv/ledger
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY app ./app
COPY projections ./projections
RUN pip install --no-cache-dir --no-deps . && useradd --system --home /srv/ledger ledger \
    && mkdir -p /data && chown ledger /data

USER ledger
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/v1/health', timeout=2)" || exit 1
CMD ["ledger", "serve", "--host", "0.0.0.0", "--port", "8000"]
