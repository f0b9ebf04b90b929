# One image for every Sluice service; the command picks the service
# (`sluice edge`, `sluice processor`, `sluice sink`, `sluice topics`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The build context is the project less .dockerignore, and pyproject.toml says what the package
# holds: a new package needs no line here. The sources go once installed; the package is what runs.
COPY . /src
RUN pip install --no-cache-dir /src && rm -rf /src \
    && useradd --system --home /app sluice && mkdir -p /app /data && chown sluice /data
WORKDIR /app
USER sluice
ENV SLUICE_STATE_DIR=/data SLUICE_HTTP_HOST=0.0.0.0
EXPOSE 8080
CMD ["sluice", "edge"]
