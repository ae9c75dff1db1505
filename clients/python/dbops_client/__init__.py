"""dbops' Python client: PostgreSQL operations as jobs, over dbops' HTTP API (standard library only).

    from dbops_client import Client, JobFailed

    dbops = Client()                          # DBOPS_URL (default http://127.0.0.1:3000), DBOPS_API_TOKEN
    job = dbops.enqueue("backup", {"env": "production"})
    result = dbops.wait(job, timeout=3600, on_progress=print)
    print(result["backupId"], result["sha256"])

Job references are "<type>/<id>" (what enqueue returns). `AsyncClient` has the same methods for asyncio;
`dbops_client.flask.Dbops(app)` is a Flask extension with a `flask dbops` command group. Every error is
a `DbopsError`. See docs/python.md.
"""

from .aio import AsyncClient
from .client import Client
from .errors import (
    BadResponse,
    ConfigurationError,
    Conflict,
    DbopsError,
    JobFailed,
    JobTimeout,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    Unreachable,
    ValidationFailed,
)
from .lock import database_lock, database_lock_key

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "BadResponse",
    "Client",
    "ConfigurationError",
    "Conflict",
    "DbopsError",
    "JobFailed",
    "JobTimeout",
    "NotFound",
    "ServiceUnavailable",
    "Unauthorized",
    "Unreachable",
    "ValidationFailed",
    "__version__",
    "database_lock",
    "database_lock_key",
]
