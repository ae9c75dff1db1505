"""A small client for dbops' HTTP API, standard library only (Python 3.9+).

    from dbops_client import Client, JobFailed

    dbops = Client()                          # DBOPS_URL (default http://127.0.0.1:3000), DBOPS_API_TOKEN
    job = dbops.enqueue("backup", {"env": "production"})
    result = dbops.wait(job, timeout=3600)    # the job's result, or JobFailed with the reason
    print(result["backupId"], result["sha256"])

Job references are "<type>/<id>" (what enqueue returns; an id alone is unique only within its queue).

A deploy script that runs `flask db upgrade` itself can still have dbops' safety around it:

    with dbops.migration_guard("production", os.environ["DATABASE_URL"]) as backup:
        subprocess.run(["flask", "db", "upgrade"], check=True)   # under dbops' lock, after a backup

(`database_lock` alone takes the lock; both need psycopg2, which the app has already.)
"""

import contextlib
import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["Client", "DbopsError", "ValidationFailed", "Unauthorized", "NotFound", "JobFailed", "JobTimeout"]

FINISHED = ("completed", "failed", "cancelled")


class DbopsError(Exception):
    """Any error from dbops or on the way to it."""


class ValidationFailed(DbopsError):
    """400: the payload was refused; nothing was enqueued. `issues` name the fields."""

    def __init__(self, message: str, issues: List[Dict[str, str]]):
        super().__init__(message)
        self.issues = issues


class Unauthorized(DbopsError):
    """401: no token, or the wrong one (DBOPS_API_TOKEN)."""


class NotFound(DbopsError):
    """404: no such job, operation type, or the API is off (no API_TOKEN on the server)."""


class JobFailed(DbopsError):
    """The job failed for good (after its retries) or was cancelled; `reason` is its failure reason."""

    def __init__(self, job: str, state: str, reason: str):
        super().__init__(f"{job} {state}: {reason}")
        self.job = job
        self.state = state
        self.reason = reason


class JobTimeout(DbopsError):
    """wait() gave up; the job goes on."""


def _split(job: str) -> Tuple[str, str]:
    kind, sep, job_id = job.partition("/")
    if not sep or not job_id:
        raise ValueError(f'a job reference is "<type>/<id>", got {job!r}')
    return kind, job_id


class Client:
    """dbops over HTTP. Connection errors are retried `retries` times with a growing pause."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, timeout: float = 10.0, retries: int = 3, backoff: float = 0.5):
        self.url = (url or os.environ.get("DBOPS_URL") or "http://127.0.0.1:3000").rstrip("/")
        self.token = token if token is not None else os.environ.get("DBOPS_API_TOKEN", "")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def enqueue(self, kind: str, payload: Dict[str, Any]) -> str:
        """Enqueues a job of operation `kind`; returns its reference, "<type>/<id>"."""
        answer = self._request("POST", f"/api/v1/jobs/{kind}", payload)
        return f"{kind}/{answer['id']}"

    def get(self, job: str) -> Dict[str, Any]:
        """The job's {id, state, progress, result, failedReason}."""
        kind, job_id = _split(job)
        return self._request("GET", f"/api/v1/jobs/{kind}/{urllib.request.quote(job_id, safe='')}")

    def wait(self, job: str, timeout: Optional[float] = None, poll: float = 1.0) -> Any:
        """Follows a job to its end: its result, or JobFailed (failed for good, or cancelled)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.get(job)
            if status["state"] == "completed":
                return status["result"]
            if status["state"] in FINISHED:
                raise JobFailed(job, status["state"], status.get("failedReason") or status["state"])
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"{job} is still {status['state']} after {timeout} s")
            time.sleep(poll)

    def backups(self, env: Optional[str] = None) -> List[Dict[str, Any]]:
        """The backups' manifests, oldest first; of one environment when given."""
        query = f"?env={urllib.request.quote(env)}" if env else ""
        return self._request("GET", f"/api/v1/backups{query}")

    @contextlib.contextmanager
    def migration_guard(self, env: str, database_url: str, timeout: Optional[float] = None, maintenance_db: str = "postgres") -> Iterator[Any]:
        """A backup of `env` (waited for), then dbops' lock on its database while the block runs.

        For a migration run outside dbops (`flask db upgrade` in a deploy script): no restore, copy or
        migrate job of dbops touches the database meanwhile, and a backup from just before stands.
        """
        backup = self.wait(self.enqueue("backup", {"env": env}), timeout=timeout)
        with database_lock(database_url, maintenance_db=maintenance_db, holder="dbops:migration-guard", timeout=timeout):
            yield backup

    def schema(self, kind: Optional[str] = None) -> Any:
        """The job contract: JSON Schemas of payloads and results."""
        return self._request("GET", f"/api/v1/schemas/{kind}" if kind else "/api/v1/schemas")

    def _request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as error:
                raise self._http_error(error) from None
            except (urllib.error.URLError, ConnectionError, socket.timeout) as error:
                # A POST is retried only when it certainly never arrived (connection refused): a retry
                # after a lost answer could enqueue the job twice.
                reason = getattr(error, "reason", error)
                refused = isinstance(reason, ConnectionRefusedError)
                attempt += 1
                if attempt > self.retries or (method != "GET" and not refused):
                    raise DbopsError(f"cannot reach dbops at {self.url}: {reason}") from None
                time.sleep(self.backoff * 2 ** (attempt - 1))

    @staticmethod
    def _http_error(error: urllib.error.HTTPError) -> DbopsError:
        try:
            answer = json.loads(error.read().decode("utf-8"))
        except ValueError:
            answer = {}
        message = answer.get("error") or f"HTTP {error.code}"
        if error.code == 400:
            return ValidationFailed(message, answer.get("issues", []))
        if error.code == 401:
            return Unauthorized(message)
        if error.code == 404:
            return NotFound(message)
        return DbopsError(f"HTTP {error.code}: {message}")


# dbops' per-database lock: a session-level advisory lock on the server's maintenance database, keyed by
# the database's name (src/postgres/lock.ts). Released by the server if this process dies.
_LOCK_NAMESPACE = 0x64626F70 & 0x7FFFFFFF


def database_lock_key(database: str) -> int:
    """The lock's key for a database name, as dbops computes it."""
    return int.from_bytes(hashlib.sha256(database.encode("utf-8")).digest()[:4], "big", signed=True) & 0x7FFFFFFF


@contextlib.contextmanager
def database_lock(database_url: str, maintenance_db: str = "postgres", holder: str = "dbops:external", timeout: Optional[float] = None, poll: float = 0.5) -> Iterator[None]:
    """Holds dbops' lock on the database `database_url` names while the block runs (waits for it first).

    Needs psycopg2. Raises JobTimeout when `timeout` seconds pass without the lock.
    """
    import psycopg2  # the app's own driver; this client needs it for this alone

    parts = urlsplit(database_url.replace("postgres://", "postgresql://", 1))
    database = unquote(parts.path.lstrip("/")) or unquote(parts.username or "") or "postgres"
    key = database_lock_key(database)
    connection = psycopg2.connect(urlunsplit(parts._replace(path="/" + maintenance_db)), application_name=holder)
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
