"""Faust processors: raw requests → normalized frames, verdicts and dead letters (imports catalog, schemas)."""
