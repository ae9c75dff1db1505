"""The client's errors: every one a DbopsError, each kind its own class."""

from __future__ import annotations

from typing import Dict, List


class DbopsError(Exception):
    """Any error from dbops or on the way to it."""


class ConfigurationError(DbopsError, ValueError):
    """The client was given something it cannot use (a URL without http:// or https://)."""


class Unreachable(DbopsError):
    """dbops did not answer: connection refused, unknown host, timed out, or a proxy's 502/503/504 page."""


class ServiceUnavailable(DbopsError):
    """503 from dbops itself: the server is up but its Redis does not answer; nothing was enqueued."""


class BadResponse(DbopsError):
    """An answer that is not dbops' JSON (a proxy's page, another service on the port)."""


class Unauthorized(DbopsError):
    """401: no token, or the wrong one (DBOPS_API_TOKEN)."""


class NotFound(DbopsError):
    """404: no such job or operation type, or the API is off (no API_TOKEN on the server)."""


class Conflict(DbopsError):
    """409: the job is not in a state for that (cancel a finished job, retry one that did not fail)."""


class ValidationFailed(DbopsError):
    """400: the payload or query was refused; nothing was enqueued. `issues` name the fields."""

    def __init__(self, message: str, issues: List[Dict[str, str]]):
        super().__init__(message)
        self.issues = issues


class JobFailed(DbopsError):
    """The job failed for good (after its retries) or was cancelled; `reason` is its failure reason."""

    def __init__(self, job: str, state: str, reason: str):
        super().__init__(f"{job} {state}: {reason}")
        self.job = job
        self.state = state
        self.reason = reason


class JobTimeout(DbopsError):
    """wait() (or a lock) gave up waiting; the job goes on."""
