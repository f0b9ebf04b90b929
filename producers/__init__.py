"""The HTTP edge: auth, limits, catalog and ingest routes; ingest produces to the
raw topic (imports catalog, warehouse, schemas)."""
