"""The edge's catalog, read and admin API, one module per resource.

definitions (metrics, thing types), places (sites, fleets and their things), harbors,
access (orgs, API keys), datasources, templates, streams (and a key's log); latest,
series and ingest_log read the warehouse; admin runs bounded SQL (sql_answers).
"""
