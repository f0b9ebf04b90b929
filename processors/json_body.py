"""A request body's JSON document, parsed once.

The ingest topic must parse a JSON value to know it is JSON; it keeps the document
on the envelope under PARSED, beside the body's bytes, so the rulebook need not
parse it again. PARSED is no field of the raw topic's envelope: it lives only in
the process that parsed it, and an envelope from the raw topic is parsed here.
"""

from __future__ import annotations

import orjson

PARSED = "parsed_body"


def document(envelope: dict) -> object:
    """The body's JSON document; raises orjson.JSONDecodeError if it is not JSON.

    Rulebooks read it and never change it: a request judged again gets the same one.
    """
    if PARSED in envelope:
        return envelope[PARSED]
    return orjson.loads(envelope["body"])
