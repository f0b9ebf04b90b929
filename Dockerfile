# One image for every Sluice service; the command picks the service
# (`sluice edge`, `sluice processor`, `sluice sink`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY schemas schemas
COPY catalog catalog
COPY warehouse warehouse
COPY producers producers
COPY processors processors
COPY sinks sinks
COPY sluice sluice
RUN pip install --no-cache-dir . && useradd --system --home /app sluice && mkdir -p /data && chown sluice /data
USER sluice
ENV SLUICE_STATE_DIR=/data SLUICE_HTTP_HOST=0.0.0.0
EXPOSE 8080
CMD ["sluice", "edge"]
