"""dbops' per-database lock, taken from Python (for a migration run outside dbops). Needs psycopg2."""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Any, Iterator, Optional
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import JobTimeout

# A session-level advisory lock on the server's maintenance database, keyed by the database's name
# (src/postgres/lock.ts). Released by the server if this process dies.
_LOCK_NAMESPACE = 0x64626F70 & 0x7FFFFFFF


def database_lock_key(database: str) -> int:
    """The lock's key for a database name, as dbops computes it."""
    return int.from_bytes(hashlib.sha256(database.encode("utf-8")).digest()[:4], "big", signed=True) & 0x7FFFFFFF


def database_of(database_url: str) -> str:
    """The database a URL names (as libpq: its path, else the user name)."""
    parts = urlsplit(database_url.replace("postgres://", "postgresql://", 1))
    return unquote(parts.path.lstrip("/")) or unquote(parts.username or "") or "postgres"


@contextlib.contextmanager
def database_lock(
    database_url: str,
    maintenance_db: str = "postgres",
    holder: str = "dbops:external",
    timeout: Optional[float] = None,
    poll: float = 0.5,
) -> Iterator[None]:
    """Holds dbops' lock on the database `database_url` names while the block runs (waits for it first).

    Raises JobTimeout when `timeout` seconds pass without the lock.
    """
    import psycopg2  # the app's own driver

    parts = urlsplit(database_url.replace("postgres://", "postgresql://", 1))
    database = database_of(database_url)
    key = database_lock_key(database)
    connection: Any = psycopg2.connect(urlunsplit(parts._replace(path="/" + maintenance_db)), application_name=holder)
    connection.autocommit = True
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        with connection.cursor() as cursor:
            while True:
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_NAMESPACE, key))
                if cursor.fetchone()[0]:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobTimeout(f"dbops' lock on database {database} is still held after {timeout} s")
                time.sleep(poll)
            try:
                yield
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_NAMESPACE, key))
    finally:
        connection.close()
