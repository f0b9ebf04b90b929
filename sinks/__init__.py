"""Consumers that batch topics into the warehouse and commit offsets only after
ClickHouse accepted the batch (imports catalog, warehouse, schemas)."""
