"""fangwire's state store: one transactional database shared by the core and its plugins.

Use :func:`open_store` to get the store of a fangwire home directory::

    async with open_store(home) as store:
        await store.migrate(CORE_MIGRATIONS)
        await store.execute("INSERT INTO ...", (...))

See :mod:`fangwire.store.base` for the contracts and :mod:`fangwire.store.sqlite` for the
SQLite backend.
"""

from pathlib import Path

from fangwire.store.base import Migration, Row, Store, StoreError, StoreHealth
from fangwire.store.sqlite import SQLiteStore

__all__ = [
    "Migration",
    "Row",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreHealth",
    "open_store",
]

DATABASE_NAME = "fangwire.db"


def open_store(home: Path) -> SQLiteStore:
    """Return the (not yet opened) store of the fangwire home directory ``home``.

    The database is ``home / "fangwire.db"``.  Open it with ``await store.open()`` or use it
    as an async context manager (``async with open_store(home) as store: ...``).
    """
    return SQLiteStore(home / DATABASE_NAME)
