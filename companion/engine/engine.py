"""The resident engine: one worker thread owns the model; everyone else submits requests.

``submit`` checks a request in the caller's thread (:func:`companion.engine.validate.prepare`), answers it
from the pre-render pool when it can, and queues the rest. The worker renders items in batches in
priority order; a background refill yields at its next step when a live job arrives. Finished audio
goes to one writer thread (so the worker never waits on the disk), which writes the watched folder.
Model loads run in a loader thread and are swapped in by the worker between batches; a failed load
leaves the running model untouched. Results come back through ``Job.future`` and as
:class:`~companion.engine.jobs.JobEvent` s to the job's listener and to every global listener (called from
the engine's threads: they must be quick and must not block).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from companion.config.settings import Params
from companion.engine.jobbook import JobBook
from companion.engine.jobs import (
    RENDERED,
    WRITTEN,
    Batch,
    Item,
    Job,
    JobEvent,
    JobQueue,
    Listener,
    PooledSample,
)
from companion.engine.model_files import load_backend
from companion.engine.render import render, write_item
from companion.engine.requests import BusyError, ModelFacts, Request
from companion.engine.validate import check_param, param_value, prepare
from companion.output.folder import SampleFolder
from models.backend import Backend
from models.errors import CheckpointError, DDError
from models.samplers import Cancelled

log = logging.getLogger("dd.engine")

Loader = Callable[..., Backend]
PROGRESS_INTERVAL = 0.05  # at most 20 progress events per job and second


class Stock(Protocol):
    """What the engine asks of a pre-render pool (:class:`companion.engine.pool.Pool` is the one): ready
    samples by pool key, and word of what changes them. The pool depends on the engine, not the reverse."""

    def take(self, key: tuple[Any, ...], n: int) -> list[PooledSample]: ...

    def give_back(self, samples: Sequence[PooledSample]) -> None: ...

    def note_use(self, category: str | None) -> None: ...

    def params_changed(self, name: str) -> None: ...

    def model_changed(self) -> None: ...

    def close(self) -> None: ...


class InternalError(DDError):
    """A bug of the companion; the log has the traceback."""

    code = "internal"


@dataclass(frozen=True)
class EngineStatus:
    state: str  # idle | busy | loading
    model: str
    runtime: str
    queued: int  # live jobs waiting or running


class Engine(JobBook):
    """See the module docstring. ``loader`` defaults to :func:`companion.engine.model_files.load_backend`."""

    def __init__(self, folder: SampleFolder, *, params: Params | None = None, queue_limit: int = 16,
                 loader: Loader = load_backend) -> None:
        super().__init__(queue_limit)
        self.folder = folder
        self.pool: Stock | None = None  # a Pool attaches itself here
        self._params = params or Params()
        self._loader = loader
        self._ids = itertools.count()
        self._backend: Backend | None = None
        self._facts: ModelFacts | None = None
        self._swap: tuple[Backend, Job] | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dd-writer")
        self._worker = threading.Thread(target=self._work, name="dd-engine", daemon=True)

    # ------------------------------------------------------------------ life cycle

    def load(self, model: str | Path | None, **options: Any) -> ModelFacts:
        """Load the first model synchronously, before :meth:`start` (afterwards submit a LoadModelRequest)."""
        if self._worker.is_alive():
            raise RuntimeError("the engine is running: switch models with submit(LoadModelRequest(...))")
        self._backend = self._loader(model, **options)
        self._facts = ModelFacts.of(self._backend)
        return self._facts

    def start(self) -> None:
        """Start the worker (and the writer thread now, not on the first pooled answer)."""
        self._worker.start()
        self._writer.submit(lambda: None)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel queued and running jobs, let writes in progress finish (no partial files), stop."""
        if self.pool is not None:
            self.pool.close()
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            jobs = self._queue.jobs()
            self._lock.notify_all()
        for job in jobs:
            self._cancel_job(job, "the companion is shutting down")
        if self._worker.is_alive():
            self._worker.join(timeout)
        self._writer.shutdown(wait=True)
        log.info("engine stopped")

    # ------------------------------------------------------------------ public API

    def submit(self, request: Request, listener: Listener | None = None) -> Job:
        """Check and queue ``request``; raise a RequestRejected (busy, not_found, out_of_range...) if refused."""
        with self._lock:
            if self._stopping:
                raise BusyError("the companion is shutting down")
            facts, params = self._facts, self._params
        plan = prepare(request, facts, params, self.result_path)
        job = Job(next(self._ids), request, plan, listener, facts=facts)
        if plan.kind == "load":
            return self._submit_load(job)
        job.items = [Item(seed) for seed in plan.seeds] or [Item(0) for _ in range(plan.frames)]
        with self._lock:
            self._queue.check_room(job)  # before taking from the pool
        pooled = self.pool.take(self.pool_key(plan, facts), len(job.items)) if plan.pool_ok and self.pool else []
        for item, sample in zip(job.items, pooled, strict=False):
            item.seed, item.audio, item.state, item.pooled = sample.seed, sample.audio, RENDERED, True
        with self._lock:
            try:
                self._queue.add(job)
            except BusyError:
                if pooled:
                    self.pool.give_back(pooled)
                raise
            self._emit(JobEvent("queued", job))  # under the lock, so it precedes any progress
            self._lock.notify()
        for index in range(len(pooled)):
            self._hand_to_writer(job, index)
        if self.pool and plan.kind == "generate":
            self.pool.note_use(plan.category)
        return job

    @property
    def model(self) -> ModelFacts | None:
        return self._facts

    @property
    def params(self) -> Params:
        return self._params

    def status(self) -> EngineStatus:
        with self._lock:
            live = self._queue.live_count()
            state = "loading" if self._loading else "busy" if live else "idle"
        facts = self._facts
        return EngineStatus(state, facts.name if facts else "", facts.runtime if facts else "", live)

    def batch_size(self) -> int:
        return self._params.batch_size or (4 if self._facts is not None and self._facts.gpu else 1)

    def get_param(self, name: str) -> int | float | str:
        """A live parameter with defaults resolved (steps of the sampler, the model's seconds, auto batch)."""
        return param_value(self._params, name, self._facts, self.batch_size())

    def set_param(self, name: str, value: Any) -> int | float | str:
        """Change a live parameter (checked like the settings file); return the value now in effect."""
        value = check_param(name, value, self._facts)
        with self._lock:
            self._params = replace(self._params, **{name: value})
        if self.pool is not None:
            self.pool.params_changed(name)
        return self.get_param(name)

    # ------------------------------------------------------------------ the worker

    def _work(self) -> None:
        while True:
            with self._lock:
                while not (self._stopping or self._swap or self._queue.has_work()):
                    self._lock.wait()
                if self._stopping:
                    return
                swap, self._swap = self._swap, None
                batch = [] if swap else self._queue.next_batch(self.batch_size())
            if swap:
                self._apply_swap(*swap)
            elif batch:
                self._run_batch(batch)

    def _run_batch(self, batch: Batch) -> None:
        counts = Counter(job for job, _ in batch)
        jobs = list(counts)
        first, backend = jobs[0], self._backend
        for job in jobs:
            job.facts = self._facts
        preemptible = all(job.background for job in jobs)

        def cancel() -> bool:  # polled before every network evaluation
            if self._stopping or all(j.cancelled for j in jobs):
                return True
            if preemptible:
                with self._lock:
                    return self._queue.live_waiting()  # a refill yields to a live request
            return False

        def progress(step: int, steps: int) -> None:
            now = time.monotonic()
            for job, k in counts.items():
                if not job.background and now - job.last_progress >= PROGRESS_INTERVAL:
                    job.last_progress = now
                    fraction = (job.fraction_rendered() * len(job.items) + k * (step + 1) / steps) / len(job.items)
                    self._emit(JobEvent("progress", job, fraction=min(1.0, fraction)))

        seeds = [job.items[i].seed for job, i in batch]
        try:
            audio = render(first, backend, seeds, progress, cancel)
        except Cancelled:
            with self._lock:
                resume = [(j, i) for j, i in batch if not j.cancelled and not self._stopping]
                JobQueue.requeue(resume)
            for job in jobs:
                if job.cancelled or self._stopping:
                    self._fail(job, Cancelled(f"job {job.id} was cancelled"))
            if resume:
                log.debug("refill of job %d pre-empted by a live request", first.id)
            return
        except DDError as exc:
            for job in jobs:
                self._fail(job, exc)
            return
        except Exception as exc:  # a bug: report it on every channel, keep serving
            log.exception("rendering job %d failed", first.id)
            for job in jobs:
                self._fail(job, InternalError(f"rendering failed: {exc!r}; see the companion's log"))
            return
        for (job, index), sound in zip(batch, audio, strict=True):
            job.items[index].audio, job.items[index].state = sound, RENDERED
        for job in jobs:
            if job.cancelled:
                self._fail(job, Cancelled(f"job {job.id} was cancelled"))
            elif job.kind == "refill":
                if all(item.state == RENDERED for item in job.items):
                    self._finish(job)
            else:
                for index in (i for j, i in batch if j is job):
                    self._hand_to_writer(job, index)

    # ------------------------------------------------------------------ writing and finishing

    def _hand_to_writer(self, job: Job, index: int) -> None:
        try:
            self._writer.submit(self._write, job, index)
        except RuntimeError:  # the writer has shut down
            self._fail(job, Cancelled(f"job {job.id} was cancelled: the companion is shutting down"))

    def _write(self, job: Job, index: int) -> None:
        """Write one rendered item (writer thread)."""
        if job.finished:
            return
        if job.cancelled or self._stopping:
            self._fail(job, Cancelled(f"job {job.id} was cancelled"))
            return
        item = job.items[index]
        try:
            path = write_item(self.folder, job, index)
        except DDError as exc:
            log.error("job %d: %s", job.id, exc)
            self._fail(job, exc)
            return
        except Exception as exc:  # a bug: report it, keep serving
            log.exception("writing job %d failed", job.id)
            self._fail(job, InternalError(f"writing failed: {exc!r}; see the companion's log"))
            return
        with self._lock:
            item.audio, item.path, item.state = None, path, WRITTEN
            complete = all(i.state == WRITTEN for i in job.items)
        if complete:
            self._finish(job)

    # ------------------------------------------------------------------ model switching

    def _submit_load(self, job: Job) -> Job:
        with self._lock:
            if self._loading is not None:
                raise BusyError(f"busy: model '{self._loading.plan.model}' is still loading (job {self._loading.id})")
            self._loading = job
            self._emit(JobEvent("queued", job))
        threading.Thread(target=self._load, args=(job,), name="dd-loader", daemon=True).start()
        return job

    def _load(self, job: Job) -> None:
        """Loader thread: build the new backend; the worker swaps it in. The old model serves meanwhile."""
        model = job.plan.model
        try:
            backend = self._loader(model, **job.plan.load_options)
        except DDError as exc:
            log.error("loading model %s failed; keeping %s: %s", model, self._facts and self._facts.name, exc)
            self._fail(job, exc)
            return
        except Exception as exc:  # torch or a reader failing in an unforeseen way: the old model stays
            log.exception("loading model %s failed", model)
            self._fail(job, CheckpointError(f"cannot load model '{model}': {exc!r}"))
            return
        with self._lock:
            if job.cancelled or self._stopping:
                self._loading = None
            else:
                self._swap = (backend, job)
                self._lock.notify_all()
                return
        self._fail(job, Cancelled(f"job {job.id} was cancelled"))

    def _apply_swap(self, backend: Backend, job: Job) -> None:
        facts = ModelFacts.of(backend)
        with self._lock:
            self._backend, self._facts, self._loading = backend, facts, None
            job.facts = facts
        log.info("model %s loaded on %s (job %d)", facts.name, facts.runtime, job.id)
        self._finish(job, facts.name)
        if self.pool is not None:
            self.pool.model_changed()

