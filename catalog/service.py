"""The catalog's operations in one object: access (orgs, keys), definitions
(metrics, thing types) and the registry (places, things). Each checks against the
view, then writes through the writer.

Blocking: every write waits for Kafka and the view (see CatalogWriter.put).
"""

from __future__ import annotations

from catalog.access import Access
from catalog.definitions import Definitions
from catalog.registry import Registry
from catalog.streams import Streams


class Catalog(Access, Definitions, Registry, Streams):
    pass
