"""Structured JSON logging with secret redaction, and the live log hub behind the log stream.

Typical use::

    hub = LogHub(redactor)
    uninstall = configure_logging("info", redactor, hub=hub)
    async with hub:
        async with hub.subscribe(level="warning", recent=50) as records:
            async for record in records:
                send(record.seq, record.to_json())
    uninstall()
"""

from fangwire.logs.formatter import JsonFormatter
from fangwire.logs.hub import LogHub, Subscription, TooManySubscribers
from fangwire.logs.records import LogRecordView, Scrubber, level_number, request_id_var
from fangwire.logs.setup import configure_logging, log_fields

__all__ = [
    "JsonFormatter",
    "LogHub",
    "LogRecordView",
    "Scrubber",
    "Subscription",
    "TooManySubscribers",
    "configure_logging",
    "level_number",
    "log_fields",
    "request_id_var",
]
