"""Metric definitions, thing types, places, things, keys: the model, the rules, and the
materialized view of the catalog topic (imports schemas)."""
