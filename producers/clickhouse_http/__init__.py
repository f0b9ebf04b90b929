"""The ClickHouse-compatible HTTP interface of the edge: ClickHouse clients (clickhouse-connect,
Grafana's data source, JDBC) run analyst SQL with a Sluice key as their password."""
