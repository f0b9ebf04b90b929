"""`sluice import FILE`: a bulk historical import (backfill, migration) through the edge.

rows.py reads NDJSON, CSV or Parquet into frames, chunk by chunk, reporting bad rows;
batches.py groups a chunk's frames per thing into frames bodies under the body limit;
checkpoint.py remembers what the edge acknowledged, so an interrupted import resumes;
sender.py posts the bodies (bounded concurrency, Retry-After, deterministic
Idempotency-Keys, bad frames isolated by halving); importer.py runs it all with a
progress bar and a summary.
"""
