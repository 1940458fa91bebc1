# The ledger service image: API (`ledger serve`) and projection workers (`ledger project`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LEDGER_DATA_DIR=/data

WORKDIR /srv/ledger
COPY pyproject.toml README.md ./
COPY app ./app
COPY projections ./projections
RUN pip install --no-cache-dir . && useradd --system --home /srv/ledger ledger \
    && mkdir -p /data && chown ledger /data

USER ledger
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/v1/health', timeout=2)" || exit 1
CMD ["ledger", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-projections"]
