"""The client for dbops' HTTP API (standard library only)."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional
from urllib.parse import quote

from . import _http
from ._http import FINISHED, Call, job_path, query
from .errors import DbopsError, JobFailed, JobTimeout, ServiceUnavailable, Unreachable
from .lock import database_lock

ProgressCallback = Callable[[Dict[str, Any]], Any]


class Routes:
    """What Client and AsyncClient share: their configuration, the API's routes, when to retry.

    `url` defaults to DBOPS_URL (else http://127.0.0.1:3000), `token` to DBOPS_API_TOKEN. Connection
    errors are retried `retries` times with a pause from `backoff` seconds, doubling. `on_behalf_of`
    names whom the calls are made for (a user of the application): dbops' job history keeps it beside
    the token's name.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        on_behalf_of: Optional[str] = None,
    ):
        self.url = _http.base_url(url or os.environ.get("DBOPS_URL") or "http://127.0.0.1:3000")
        self.token = token if token is not None else os.environ.get("DBOPS_API_TOKEN", "")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.on_behalf_of = on_behalf_of

    @staticmethod
    def _enqueue(kind: str, payload: Dict[str, Any]) -> Call:
        return Call("POST", f"/api/v1/jobs/{quote(kind, safe='')}", payload)

    @staticmethod
    def _validate(kind: str, payload: Dict[str, Any]) -> Call:
        return Call("POST", f"/api/v1/validate/{quote(kind, safe='')}", payload)

    @staticmethod
    def _jobs(**filters: Any) -> Call:
        return Call("GET", "/api/v1/jobs" + query(**filters))

    @staticmethod
    def _history(**filters: Any) -> Call:
        return Call("GET", "/api/v1/history" + query(**filters))

    @staticmethod
    def _get(job: str) -> Call:
        return Call("GET", job_path(job))

    @staticmethod
    def _logs(job: str, limit: int) -> Call:
        return Call("GET", job_path(job, "/logs") + query(limit=limit))

    @staticmethod
    def _cancel(job: str) -> Call:
        return Call("POST", job_path(job, "/cancel"))

    @staticmethod
    def _retry(job: str) -> Call:
        return Call("POST", job_path(job, "/retry"))

    ENVIRONMENTS = Call("GET", "/api/v1/environments")
    HEALTH = Call("GET", "/healthz", auth=False)

    @staticmethod
    def _backups(env: Optional[str]) -> Call:
        return Call("GET", "/api/v1/backups" + query(env=env))

    @staticmethod
    def _schema(kind: Optional[str]) -> Call:
        return Call("GET", f"/api/v1/schemas/{quote(kind, safe='')}" if kind else "/api/v1/schemas")

    def _pause(self, attempt: int) -> float:
        return float(self.backoff * 2 ** (attempt - 1))

    def _retryable(self, error: DbopsError, call: Call, attempt: int) -> bool:
        # A POST is sent again only when it certainly never arrived (connection refused): a retry after a
        # lost answer could enqueue the job twice.
        if attempt > self.retries or not isinstance(error, Unreachable):
            return False
        return call.method == "GET" or _http.refused_connection(error)


class _Follow:
    """wait()'s bookkeeping, the same for both clients: outcome, deadline, progress reports, outages."""

    def __init__(self, job: str, timeout: Optional[float], outage: float, on_progress: Optional[ProgressCallback]):
        self.job = job
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.outage = outage
        self.outage_since: Optional[float] = None
        self.on_progress = on_progress
        self.last: Optional[Dict[str, Any]] = None

    def seen(self, status: Dict[str, Any]) -> "tuple[bool, Any, Optional[Dict[str, Any]]]":
        """(finished, result, progress to report)."""
        self.outage_since = None
        if status["state"] == "completed":
            return True, status.get("result"), self._report({"percent": 100, "step": "completed"})
        if status["state"] in FINISHED:
            raise JobFailed(self.job, status["state"], status.get("failedReason") or status["state"])
        return False, None, self._report(_http.progress_of(status))

    def unreachable(self, error: DbopsError) -> None:
        """An outage while following: tolerated for `outage` seconds, then raised."""
        now = time.monotonic()
        if not isinstance(error, (Unreachable, ServiceUnavailable)):
            raise error
        self.outage_since = self.outage_since or now
        if now - self.outage_since >= self.outage:
            raise error

    def check_deadline(self, state: str) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise JobTimeout(f"{self.job} is still {state} after {self.timeout} s")

    def _report(self, progress: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        if self.on_progress is None or progress == self.last:
            return None
        self.last = progress
        return progress


class Client(Routes):
    """dbops over HTTP: Client(url=None, token=None, timeout=10.0, retries=3, backoff=0.5) (see Routes)."""

    def enqueue(self, kind: str, payload: Dict[str, Any]) -> str:
        """Enqueues a job of operation `kind`; returns its reference, "<type>/<id>"."""
        answer = self._request(self._enqueue(kind, payload))
        return f"{kind}/{answer['id']}"

    def validate(self, kind: str, payload: Dict[str, Any]) -> Dict[str, Any]:
        """What a worker would answer, nothing enqueued: the payload as it would run, or ValidationFailed."""
        answer: Dict[str, Any] = self._request(self._validate(kind, payload))
        return dict(answer["payload"])

    def get(self, job: str) -> Dict[str, Any]:
        """The job: {id, type, state, progress: {percent, step}, data, result, failedReason, ...}."""
        answer: Dict[str, Any] = self._request(self._get(job))
        return answer

    def wait(
        self,
        job: str,
        timeout: Optional[float] = None,
        poll: float = 1.0,
        on_progress: Optional[ProgressCallback] = None,
        outage: float = 60.0,
    ) -> Any:
        """Follows a job to its end: its result, or JobFailed (failed for good, or cancelled).

        `on_progress({"percent": N, "step": "..."})` is called whenever the progress changes. An outage
        (dbops or its Redis away) shorter than `outage` seconds is waited out.
        """
        follow = _Follow(job, timeout, outage, on_progress)
        state = "waiting"
        while True:
            try:
                status = self.get(job)
            except DbopsError as error:
                follow.unreachable(error)
            else:
                state = status["state"]
                finished, result, progress = follow.seen(status)
                if progress is not None and on_progress is not None:
                    on_progress(progress)
                if finished:
                    return result
            follow.check_deadline(state)
            time.sleep(poll)

    def jobs(
        self,
        type: Optional[str] = None,
        env: Optional[str] = None,
        state: Optional[str] = None,
        since: Optional[str] = None,
        until: Optional[str] = None,
        search: Optional[str] = None,
        limit: int = 50,
    ) -> List[Dict[str, Any]]:
        """Jobs, newest first. `since`: a duration back (30m, 12h, 7d) or an ISO time; states comma-separated."""
        answer: List[Dict[str, Any]] = self._request(
            self._jobs(type=type, env=env, state=state, since=since, until=until, search=search, limit=limit)
        )
        return answer

    def history(
        self,
        type: Optional[str] = None,
        env: Optional[str] = None,
        state: Optional[str] = None,
        since: Optional[str] = None,
        until: Optional[str] = None,
        search: Optional[str] = None,
        limit: int = 50,
    ) -> List[Dict[str, Any]]:
        """Finished jobs from dbops' history (kept beyond the queues), newest first: who asked, what happened."""
        answer: List[Dict[str, Any]] = self._request(
            self._history(type=type, env=env, state=state, since=since, until=until, search=search, limit=limit)
        )
        return answer

    def logs(self, job: str, limit: int = 1000) -> List[str]:
        """The job's log lines (the last `limit`)."""
        answer: Dict[str, Any] = self._request(self._logs(job, limit))
        return list(answer["lines"])

    def cancel(self, job: str) -> str:
        """Removes a waiting job ("removed") or stops a running one ("signalled"); Conflict when finished."""
        answer: Dict[str, Any] = self._request(self._cancel(job))
        return str(answer["outcome"])

    def retry(self, job: str) -> None:
        """Runs a failed or cancelled job once more; Conflict for any other (a completed job never runs again)."""
        self._request(self._retry(job))

    def environments(self) -> List[Dict[str, Any]]:
        """[{name, protected, reachable, serverVersion, sizeBytes, lastBackup}]."""
        answer: List[Dict[str, Any]] = self._request(self.ENVIRONMENTS)
        return answer

    def health(self) -> Dict[str, Any]:
        """{"status": "ok"}; ServiceUnavailable when its Redis is down, Unreachable when dbops is."""
        answer: Dict[str, Any] = self._request(self.HEALTH)
        return answer

    def backups(self, env: Optional[str] = None) -> List[Dict[str, Any]]:
        """The backups' manifests, oldest first; of one environment when given."""
        answer: List[Dict[str, Any]] = self._request(self._backups(env))
        return answer

    def schema(self, kind: Optional[str] = None) -> Any:
        """The job contract: JSON Schemas of payloads, results and progress, with examples."""
        return self._request(self._schema(kind))

    @contextlib.contextmanager
    def migration_guard(
        self, env: str, database_url: str, timeout: Optional[float] = None, maintenance_db: str = "postgres"
    ) -> Iterator[Any]:
        """A backup of `env` (waited for), then dbops' lock on its database while the block runs.

        For a migration run outside dbops (`flask db upgrade` in a deploy script): no restore, copy or
        migrate job of dbops touches the database meanwhile, and a backup from just before stands.
        """
        backup = self.wait(self.enqueue("backup", {"env": env}), timeout=timeout)
        with database_lock(database_url, maintenance_db=maintenance_db, holder="dbops:migration-guard", timeout=timeout):
            yield backup

    def _request(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                return _http.exchange(self.url, self.token, call, self.timeout, self.on_behalf_of)
            except DbopsError as error:
                attempt += 1
                if not self._retryable(error, call, attempt):
                    raise
                time.sleep(self._pause(attempt))
