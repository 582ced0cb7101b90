"""Jobs, their results and events, and the bounded priority queue the engine's worker draws from.

A job is a checked :class:`~companion.engine.requests.Plan` split into items (one per seed, or per morph
frame). The worker takes items in batches: the best job's next items first, then items of other
queued jobs with the same sampling key, up to the batch size. The queue is not thread-safe by itself;
the engine calls it under its own lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from companion.engine.requests import BusyError, ModelFacts, Plan, Priority, Request
from models.errors import DDError

QUEUED, RUNNING, RENDERED, WRITTEN = "queued", "running", "rendered", "written"


@dataclass
class Item:
    """One sound of a job: its seed, then its audio once rendered, then its path once written."""

    seed: int
    state: str = QUEUED
    audio: np.ndarray | None = None
    path: Path | None = None
    pooled: bool = False  # taken ready-made from the pre-render pool


@dataclass(frozen=True)
class PooledSample:
    """One pre-rendered sound: audio ``[channels, n]`` at the model rate, its seed, and its pool key."""

    seed: int
    audio: np.ndarray
    key: tuple[Any, ...]


@dataclass(frozen=True)
class JobResult:
    """What a finished job made. ``audio`` is filled only for pool refills, which write nothing."""

    job: int
    kind: str
    category: str | None
    model: str
    paths: tuple[Path, ...] = ()
    seeds: tuple[int, ...] = ()
    audio: tuple[np.ndarray, ...] = ()
    pooled: int = 0  # how many items came from the pool
    key: tuple | None = None


@dataclass(frozen=True)
class JobEvent:
    """``kind`` is queued, progress (``fraction``), done (``result``) or error (``error``)."""

    kind: str
    job: Job
    fraction: float = 0.0
    result: JobResult | None = None
    error: DDError | None = None


Listener = Callable[[JobEvent], None]


@dataclass(eq=False)
class Job:
    """A unit of work with an id, a plan, its items, a future and an optional listener."""

    id: int
    request: Request
    plan: Plan
    listener: Listener | None = None
    items: list[Item] = field(default_factory=list)
    future: Future = field(default_factory=Future)
    cancelled: bool = False
    finished: bool = False
    facts: ModelFacts | None = None  # the model the job is (or was) rendered with
    context: dict[str, Any] = field(default_factory=dict)  # the worker's per-job cache (loaded sources...)
    last_progress: float = 0.0
    created: float = field(default_factory=time.monotonic)

    @property
    def kind(self) -> str:
        return self.plan.kind

    @property
    def priority(self) -> Priority:
        return self.plan.priority

    @property
    def origin(self) -> str:
        return getattr(self.request, "origin", "api")

    @property
    def background(self) -> bool:
        return self.plan.priority >= Priority.BACKGROUND

    def queued_items(self) -> list[int]:
        return [i for i, item in enumerate(self.items) if item.state == QUEUED]

    def started(self) -> bool:
        return any(item.state != QUEUED for item in self.items)

    def fraction_rendered(self) -> float:
        if not self.items:
            return 0.0
        return sum(item.state in (RENDERED, WRITTEN) for item in self.items) / len(self.items)


Batch = list[tuple[Job, int]]


class JobQueue:
    """Jobs not finished yet, in (priority, id) order. ``limit`` bounds the live ones; background
    jobs (pool refills) have their own bound, set by the pool's size."""

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"queue limit must be a positive integer, got {limit!r}")
        self.limit = limit
        self._jobs: dict[int, Job] = {}

    def check_room(self, job: Job) -> None:
        """Raise BusyError when ``job`` is live and the live jobs already reach the limit."""
        if not job.background and self.live_count() >= self.limit:
            raise BusyError(f"busy: {self.limit} jobs are already queued or running (the queue limit); "
                            "try again when one has finished")

    def add(self, job: Job) -> None:
        self.check_room(job)
        self._jobs[job.id] = job

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def remove(self, job: Job) -> None:
        self._jobs.pop(job.id, None)

    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: (j.priority, j.id))

    def live_count(self) -> int:
        return sum(not job.background for job in self._jobs.values())

    def live_waiting(self) -> bool:
        """Whether a live job has items no batch has taken yet (a reason to pre-empt a refill)."""
        return any(not job.background and not job.cancelled and job.queued_items() for job in self._jobs.values())

    def has_work(self) -> bool:
        return any(not job.cancelled and job.queued_items() for job in self._jobs.values())

    def next_batch(self, batch_size: int) -> Batch:
        """Mark and return the next items to render together (empty when nothing is waiting)."""
        order = [job for job in self.jobs() if not job.cancelled and job.queued_items()]
        if not order:
            return []
        first = order[0]
        if first.kind == "morph":  # a morph renders all its frames in one call
            return self._take(first, len(first.items), [])
        batch = self._take(first, batch_size, [])
        key = first.plan.sampling_key
        if key is not None:
            for job in order[1:]:
                if len(batch) >= batch_size:
                    break
                if job.plan.sampling_key == key:  # refills may fill up a live batch: free on a GPU
                    batch = self._take(job, batch_size - len(batch), batch)
        return batch

    @staticmethod
    def _take(job: Job, n: int, batch: Batch) -> Batch:
        for index in job.queued_items()[:n]:
            job.items[index].state = RUNNING
            batch.append((job, index))
        return batch

    @staticmethod
    def requeue(batch: Batch) -> None:
        """Put items of a pre-empted batch back in line."""
        for job, index in batch:
            if job.items[index].state == RUNNING:
                job.items[index].state = QUEUED
