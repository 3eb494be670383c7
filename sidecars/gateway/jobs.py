"""Background jobs (retraining) run in a one-thread pool, off the event loop, tracked by id."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import structlog

_log = structlog.get_logger("gateway")


class Job(msgspec.Struct, kw_only=True):
    """A background job's status: ``queued`` → ``running`` → ``succeeded`` | ``failed``."""

    job_id: str
    kind: str
    status: str = "queued"
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: str = ""


def _plain(value: Any) -> Any:
    try:
        return msgspec.to_builtins(value, str_keys=True, enc_hook=str)
    except (TypeError, ValueError):
        return str(value)


class JobRunner:
    """Run blocking callables one at a time in a worker thread (the capacity limit is 1)."""

    def __init__(self, max_jobs: int = 100) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-job")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._max_jobs = max_jobs

    def submit(self, kind: str, fn: Callable[[], Any]) -> Job:
        """Queue ``fn`` and return its job; the job records the result or the error."""
        job = Job(job_id=uuid.uuid4().hex, kind=kind, submitted_at=time.time())
        self._jobs[job.job_id] = job
        while len(self._jobs) > self._max_jobs:
            self._jobs.popitem(last=False)

        def run() -> Any:
            job.status, job.started_at = "running", time.time()
            return fn()

        future = asyncio.get_running_loop().run_in_executor(self._pool, run)

        def done(fut: asyncio.Future[Any]) -> None:
            job.finished_at = time.time()
            if fut.cancelled():
                job.status, job.error = "failed", "cancelled"
            elif (exc := fut.exception()) is not None:
                job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
                _log.warning("gateway.job_failed", job_id=job.job_id, kind=kind, error=job.error)
            else:
                job.status, job.result = "succeeded", _plain(fut.result())

        future.add_done_callback(done)
        return job

    def get(self, job_id: str) -> Job | None:
        """Return the job with ``job_id``, or None."""
        return self._jobs.get(job_id)

    def close(self) -> None:
        """Cancel queued jobs; a running one finishes in its thread (threads cannot be killed)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
