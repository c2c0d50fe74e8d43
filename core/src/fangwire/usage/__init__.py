"""Usage metering: the model price catalog and the meter recording every model call.

See :mod:`fangwire.usage.catalog` for prices and cost arithmetic and
:mod:`fangwire.usage.meter` for the ``usage_events`` table and its aggregates.
"""

from fangwire.usage.catalog import CATALOG_RESOURCE, FALLBACK_PRICE, ModelCatalog, Price
from fangwire.usage.meter import (
    USAGE_COMPONENT,
    USAGE_MIGRATIONS,
    Period,
    UsageEvent,
    UsageMeter,
)

__all__ = [
    "CATALOG_RESOURCE",
    "FALLBACK_PRICE",
    "USAGE_COMPONENT",
    "USAGE_MIGRATIONS",
    "ModelCatalog",
    "Period",
    "Price",
    "UsageEvent",
    "UsageMeter",
]
