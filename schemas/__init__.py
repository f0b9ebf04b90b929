"""Avro contracts (.avsc) for every topic, with encode/decode helpers (imports nothing of ours)."""

from schemas.codec import SchemaMismatch, decode, encode, is_avro
from schemas.topics import Topics

RAW_ENVELOPE = "sluice.RawEnvelope"
FRAME_BATCH = "sluice.FrameBatch"
VERDICT = "sluice.Verdict"
DEAD_LETTER = "sluice.DeadLetter"
CATALOG_RECORD = "sluice.CatalogRecord"
RECORD_BATCH = "sluice.RecordBatch"

# A verdict with http_status 503 (the processor could not judge the request yet): how long its
# client should wait before sending it again, in the message and in the edge's Retry-After.
UNAVAILABLE_RETRY_AFTER_S = 5

__all__ = [
    "CATALOG_RECORD",
    "DEAD_LETTER",
    "FRAME_BATCH",
    "RAW_ENVELOPE",
    "RECORD_BATCH",
    "UNAVAILABLE_RETRY_AFTER_S",
    "VERDICT",
    "SchemaMismatch",
    "Topics",
    "decode",
    "encode",
    "is_avro",
]
