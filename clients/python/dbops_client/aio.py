"""The asyncio client: the same calls as Client, awaitable.

Each HTTP exchange runs in a worker thread (asyncio.to_thread), so the event loop never blocks, and
waiting between polls is asyncio.sleep: following a long job holds no thread.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Dict, List, Optional

from . import _http
from ._http import Call
from .client import ProgressCallback, Routes, _Follow
from .errors import DbopsError


class AsyncClient(Routes):
    """dbops over HTTP for asyncio applications; the same arguments and methods as Client."""

    async def enqueue(self, kind: str, payload: Dict[str, Any]) -> str:
        answer = await self._request(self._enqueue(kind, payload))
        return f"{kind}/{answer['id']}"

    async def validate(self, kind: str, payload: Dict[str, Any]) -> Dict[str, Any]:
        answer = await self._request(self._validate(kind, payload))
        return dict(answer["payload"])

    async def get(self, job: str) -> Dict[str, Any]:
        answer: Dict[str, Any] = await self._request(self._get(job))
        return answer

    async def wait(
        self,
        job: str,
        timeout: Optional[float] = None,
        poll: float = 1.0,
        on_progress: Optional[ProgressCallback] = None,
        outage: float = 60.0,
    ) -> Any:
        """As Client.wait; `on_progress` may be a plain function or a coroutine function."""
        follow = _Follow(job, timeout, outage, on_progress)
        state = "waiting"
        while True:
            try:
                status = await self.get(job)
            except DbopsError as error:
                follow.unreachable(error)
            else:
                state = status["state"]
                finished, result, progress = follow.seen(status)
                if progress is not None and on_progress is not None:
                    reported = on_progress(progress)
                    if inspect.isawaitable(reported):
                        await reported
                if finished:
                    return result
            follow.check_deadline(state)
            await asyncio.sleep(poll)

    async def jobs(
        self,
        type: Optional[str] = None,
        env: Optional[str] = None,
        state: Optional[str] = None,
        since: Optional[str] = None,
        until: Optional[str] = None,
        search: Optional[str] = None,
        limit: int = 50,
    ) -> List[Dict[str, Any]]:
        answer: List[Dict[str, Any]] = await self._request(
            self._jobs(type=type, env=env, state=state, since=since, until=until, search=search, limit=limit)
        )
        return answer

    async def history(
        self,
        type: Optional[str] = None,
        env: Optional[str] = None,
        state: Optional[str] = None,
        since: Optional[str] = None,
        until: Optional[str] = None,
        search: Optional[str] = None,
        limit: int = 50,
    ) -> List[Dict[str, Any]]:
        answer: List[Dict[str, Any]] = await self._request(
            self._history(type=type, env=env, state=state, since=since, until=until, search=search, limit=limit)
        )
        return answer

    async def logs(self, job: str, limit: int = 1000) -> List[str]:
        answer = await self._request(self._logs(job, limit))
        return list(answer["lines"])

    async def cancel(self, job: str) -> str:
        answer = await self._request(self._cancel(job))
        return str(answer["outcome"])

    async def retry(self, job: str) -> None:
        await self._request(self._retry(job))

    async def environments(self) -> List[Dict[str, Any]]:
        answer: List[Dict[str, Any]] = await self._request(self.ENVIRONMENTS)
        return answer

    async def health(self) -> Dict[str, Any]:
        answer: Dict[str, Any] = await self._request(self.HEALTH)
        return answer

    async def backups(self, env: Optional[str] = None) -> List[Dict[str, Any]]:
        answer: List[Dict[str, Any]] = await self._request(self._backups(env))
        return answer

    async def schema(self, kind: Optional[str] = None) -> Any:
        return await self._request(self._schema(kind))

    async def _request(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                return await asyncio.to_thread(_http.exchange, self.url, self.token, call, self.timeout, self.on_behalf_of)
            except DbopsError as error:
                attempt += 1
                if not self._retryable(error, call, attempt):
                    raise
                await asyncio.sleep(self._pause(attempt))
