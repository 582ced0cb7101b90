"""The engine's book of jobs: the queue, how a job ends (done, error, cancelled), and who is told.

:class:`JobBook` is the base of :class:`companion.engine.engine.Engine`; it holds the state every engine
thread shares under one lock (the queue, the model being loaded, recent results, the listeners) and
the only code that ends a job, so a job ends exactly once and its future and its events agree.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from companion.engine.jobs import RENDERED, RUNNING, Job, JobEvent, JobQueue, JobResult, Listener
from companion.engine.requests import ModelFacts, NotFoundError, Plan, UnknownJobError
from models.errors import DDError
from models.samplers import Cancelled

log = logging.getLogger("dd.engine")

RECENT_RESULTS = 512  # finished jobs whose paths stay addressable as job:<id>


class JobBook:
    """Shared job state and the ways a job ends. Listeners are called outside the lock, except the
    ``queued`` event (so it always precedes the job's progress); they must be quick and never block."""

    def __init__(self, queue_limit: int) -> None:
        self._lock = threading.Condition()  # re-entrant: a listener may call back into the engine
        self._queue = JobQueue(queue_limit)
        self._listeners: list[Listener] = []
        self._results: OrderedDict[int, tuple[Path, ...]] = OrderedDict()
        self._loading: Job | None = None
        self._stopping = False

    def add_listener(self, listener: Listener) -> None:
        """Be told of every job's events (from the engine's threads)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [x for x in self._listeners if x is not listener]

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued or running job (it ends with a ``cancelled`` error); UnknownJobError otherwise."""
        with self._lock:
            job = self._queue.get(job_id)
            if job is None and self._loading is not None and self._loading.id == job_id:
                job = self._loading
        if job is None or job.finished:
            raise UnknownJobError(f"job {job_id} is neither queued nor running")
        self._cancel_job(job, f"job {job_id} was cancelled")
        return job

    def cancel_all(self) -> int:
        """Cancel every live job (pool refills go on); return how many were cancelled."""
        with self._lock:
            jobs = [job for job in self._queue.jobs() if not job.background and not job.cancelled]
        for job in jobs:
            self._cancel_job(job, f"job {job.id} was cancelled (cancel all)")
        return len(jobs)

    def result_path(self, job: int, item: int = 0) -> Path:
        """The file item ``item`` of finished job ``job`` wrote (for variations of earlier results)."""
        with self._lock:
            paths = self._results.get(job)
        if paths is None:
            raise NotFoundError(f"job {job} has no result: unknown, unfinished, or older than the last {RECENT_RESULTS}")
        if not 0 <= item < len(paths):
            raise NotFoundError(f"job {job} made {len(paths)} file(s); item {item} does not exist")
        return paths[item]

    @staticmethod
    def pool_key(plan: Plan, facts: ModelFacts | None) -> tuple[Any, ...]:
        """Pooled samples answer requests with the same model and sampling key."""
        return (facts.model_hash if facts else "", *(plan.sampling_key or ()))

    # ------------------------------------------------------------------ ending a job

    def _finish(self, job: Job, model: str | None = None) -> None:
        facts = job.facts
        with self._lock:
            if job.finished:
                return
            job.finished = True
            self._queue.remove(job)
            paths = tuple(item.path for item in job.items if item.path is not None)
            refill = job.kind == "refill"
            result = JobResult(
                job.id, job.kind, job.plan.category, model or (facts.name if facts else ""), paths,
                seeds=tuple(item.seed for item in job.items),
                audio=tuple(item.audio for item in job.items) if refill else (),
                pooled=sum(item.pooled for item in job.items),
                key=self.pool_key(job.plan, facts) if refill else None,
            )
            if paths:
                self._results[job.id] = paths
                while len(self._results) > RECENT_RESULTS:
                    self._results.popitem(last=False)
        job.future.set_result(result)
        self._emit(JobEvent("done", job, result=result))

    def _fail(self, job: Job, error: DDError) -> None:
        with self._lock:
            if job.finished:
                return
            job.finished = True
            self._queue.remove(job)
            if self._loading is job:
                self._loading = None
        job.future.set_exception(error)
        self._emit(JobEvent("error", job, error=error))

    def _cancel_job(self, job: Job, message: str) -> None:
        with self._lock:
            job.cancelled = True
            in_flight = job.kind == "load" or any(item.state in (RUNNING, RENDERED) for item in job.items)
        if not in_flight:  # nothing of it is being rendered or written: it ends now
            self._fail(job, Cancelled(message))

    def _emit(self, event: JobEvent) -> None:
        targets = ([event.job.listener] if event.job.listener else []) + list(self._listeners)
        for listener in targets:
            try:
                listener(event)
            except Exception:  # a sink's bug must not stop the engine
                log.exception("listener failed on %s of job %d", event.kind, event.job.id)
