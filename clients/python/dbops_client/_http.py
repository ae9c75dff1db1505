"""What the sync and async clients share: the routes, one HTTP exchange, and answers turned into errors."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple
from urllib.parse import quote, urlencode, urlsplit

from .errors import (
    BadResponse,
    ConfigurationError,
    Conflict,
    DbopsError,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    Unreachable,
    ValidationFailed,
)

FINISHED = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Call:
    """One request to the API: method, path (with its query) and JSON body."""

    method: str
    path: str
    body: Optional[Any] = None
    auth: bool = True


def base_url(url: str) -> str:
    """The server's URL, checked: http:// or https:// and a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"the dbops URL must be http://HOST[:PORT] or https://..., got {url!r}")
    return url.rstrip("/")


def split_job(job: str) -> Tuple[str, str]:
    """A job reference "<type>/<id>" (what enqueue returns) as its type and id."""
    kind, sep, job_id = job.partition("/")
    if not sep or not kind or not job_id:
        raise ConfigurationError(f'a job reference is "<type>/<id>", got {job!r}')
    return kind, job_id


def job_path(job: str, tail: str = "") -> str:
    kind, job_id = split_job(job)
    return f"/api/v1/jobs/{quote(kind, safe='')}/{quote(job_id, safe='')}{tail}"


def query(**params: Any) -> str:
    given = {key: str(value) for key, value in params.items() if value is not None and value != ""}
    return f"?{urlencode(given)}" if given else ""


def progress_of(status: Dict[str, Any]) -> Dict[str, Any]:
    """A job's progress as {percent, step} (what the server answers; older servers sent a bare 0)."""
    progress = status.get("progress")
    if isinstance(progress, dict):
        return {"percent": progress.get("percent", 0), "step": progress.get("step", "")}
    return {"percent": progress if isinstance(progress, (int, float)) else 0, "step": ""}


def exchange(base: str, token: str, call: Call, timeout: float, on_behalf_of: Optional[str] = None) -> Any:
    """One request and its answer as JSON; every failure a DbopsError of its kind."""
    data = None if call.body is None else json.dumps(call.body).encode("utf-8")
    headers = {"Accept": "application/json"}
    if call.auth:
        headers["Authorization"] = f"Bearer {token}"
    if on_behalf_of:
        headers["X-Dbops-On-Behalf-Of"] = on_behalf_of
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(base + call.path, data=data, method=call.method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _json(response.read(), base, response.status)
    except urllib.error.HTTPError as error:
        raise _http_error(error, base) from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, ConnectionRefusedError):
            raise Unreachable(f"cannot reach dbops at {base}: connection refused") from None
        raise Unreachable(f"cannot reach dbops at {base}: {reason}") from None
    except (socket.timeout, TimeoutError):
        raise Unreachable(f"cannot reach dbops at {base}: no answer in {timeout} s") from None
    except (ConnectionError, OSError) as error:
        raise Unreachable(f"cannot reach dbops at {base}: {error}") from None


def refused_connection(error: DbopsError) -> bool:
    """Whether the request certainly never arrived (so that even a POST may be sent again)."""
    return isinstance(error, Unreachable) and str(error).endswith("connection refused")


def _json(raw: bytes, base: str, status: int) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        first = raw[:80].decode("utf-8", "replace").strip().splitlines()
        raise BadResponse(
            f"{base} answered HTTP {status} with something that is not dbops' JSON"
            f" ({first[0] if first else 'an empty body'!r}): is this dbops' URL?"
        ) from None


def _http_error(error: urllib.error.HTTPError, base: str) -> DbopsError:
    raw = error.read()
    try:
        answer = json.loads(raw.decode("utf-8"))
        if not isinstance(answer, dict):
            raise ValueError
    except (UnicodeDecodeError, ValueError):
        if error.code in (502, 503, 504):
            return Unreachable(f"cannot reach dbops at {base}: HTTP {error.code} from a proxy")
        return BadResponse(f"{base} answered HTTP {error.code} with something that is not dbops' JSON: is this dbops' URL?")
    message = str(answer.get("error") or answer.get("reason") or f"HTTP {error.code}")
    if error.code == 400:
        return ValidationFailed(message, list(answer.get("issues") or []))
    if error.code == 401:
        return Unauthorized(message)
    if error.code == 404:
        return NotFound(message)
    if error.code == 409:
        return Conflict(message)
    if error.code == 503:
        return ServiceUnavailable(message)
    return DbopsError(f"HTTP {error.code}: {message}")
