"""The HTTP edge (imports catalog, warehouse, schemas): the catalog, read and admin API
(api/), the ingestion dialects (dialects/), and the HTTP layer they share (edge/);
ingest produces to the raw topic."""
