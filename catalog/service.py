"""The catalog's operations in one object: access (orgs, keys), definitions
(metrics, thing types, presets), places and their things, streams, harbors, data sources
and integrations. Each checks against the view, then writes through the writer.

Blocking: every write waits for Kafka and the view (see CatalogWriter.put).
"""

from __future__ import annotations

from catalog.access import Access
from catalog.datasources import DataSources
from catalog.definitions import Definitions
from catalog.harbors import Harbors
from catalog.integrations import Integrations
from catalog.places import Places
from catalog.presets import Presets
from catalog.streams import Streams
from catalog.templates import Templates


class Catalog(Access, Definitions, Places, Streams, Harbors, DataSources, Templates, Presets, Integrations):
    pass
