"""The pre-render pool: K fresh samples per category rendered ahead, so "a new kick" is answered at once.

Pooled samples are held in memory (not written), so the watched folder only ever holds samples
someone asked for; a take hands a ready sample to the engine's writer in microseconds. Refills are
background jobs (lowest priority, pre-empted by live requests, at most one batch each) submitted
whenever a category's stock plus its refills in flight fall below the pool size. The stock is keyed
by the model and the sampling settings: a model switch or a change of steps, sampler, guidance, tail gate or
seconds throws it away and starts again. Categories in use are the configured ones (all of the model's by
default) plus every category asked for since.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from companion.engine.engine import Engine
from companion.engine.jobs import Job, JobEvent, PooledSample
from companion.engine.requests import RefillRequest, RequestRejected
from companion.engine.validate import prepare
from models.errors import DDError
from models.samplers import Cancelled

log = logging.getLogger("dd.pool")

_INVALIDATING = ("steps", "sampler", "guidance", "tail_gate", "band_limit", "seconds")  # parameters that change what a pooled sample is


class Pool:
    """Attaches itself to ``engine`` (``engine.pool``: the engine's :class:`~companion.engine.engine.Stock`);
    its size is the engine's ``pool_size`` parameter."""

    def __init__(self, engine: Engine, categories: Sequence[str] = ()) -> None:
        self.engine = engine
        self._configured = tuple(categories)
        self._lock = threading.Lock()
        self._stock: dict[tuple[Any, ...], deque[PooledSample]] = {}
        self._keys: dict[str | None, tuple[Any, ...]] = {}  # category -> the key its samples need now
        self._in_flight: Counter[str | None] = Counter()  # category -> items being refilled
        self._jobs: set[Job] = set()
        self._in_use: set[str | None] = set()
        self._failing: set[str | None] = set()
        self._closed = False
        engine.pool = self
        engine.add_listener(self._after_take)

    @property
    def size(self) -> int:
        return self.engine.params.pool_size

    def start(self) -> None:
        """Fill the pool for the loaded model."""
        self.model_changed()

    def close(self) -> None:
        """Stop refilling (the engine calls this when it shuts down)."""
        with self._lock:
            self._closed = True
            self._stock.clear()

    # ------------------------------------------------------------------ answering requests

    def take(self, key: tuple[Any, ...], n: int) -> list[PooledSample]:
        """Up to ``n`` ready samples for ``key`` (fewer, or none, when the stock is short)."""
        with self._lock:
            stock = self._stock.get(key)
            if not stock:
                return []
            return [stock.popleft() for _ in range(min(n, len(stock)))]

    def give_back(self, samples: Sequence[PooledSample]) -> None:
        """Return samples taken for a request that was then refused."""
        with self._lock:
            for sample in reversed(samples):
                self._stock.setdefault(sample.key, deque()).appendleft(sample)

    def counts(self) -> dict[str | None, int]:
        """Ready samples per category, for the categories in use."""
        with self._lock:
            return {c: len(self._stock.get(self._keys.get(c, ()), ())) for c in self._in_use}

    # ------------------------------------------------------------------ keeping it fresh

    def note_use(self, category: str | None) -> None:
        """A category was asked for: keep it in the pool from now on (and start filling it if new)."""
        with self._lock:
            new = category not in self._in_use
            self._in_use.add(category)
        if new:
            self.top_up()

    def _after_take(self, event: JobEvent) -> None:
        """Refill once a job that took pooled samples has ended: off the request's path, in the writer."""
        if event.kind in ("done", "error") and any(item.pooled for item in event.job.items):
            self.top_up()

    def discard(self, category: str | None) -> int:
        """Throw away a category's ready samples (a pad's "regenerate"); return how many."""
        with self._lock:
            stock = self._stock.pop(self._keys.get(category, ()), deque())
        self.top_up()
        return len(stock)

    def set_categories(self, categories: Sequence[str]) -> None:
        """Pre-render these categories (empty: all of the model's) instead of the configured ones."""
        self._configured = tuple(categories)
        self.model_changed()

    def model_changed(self) -> None:
        """A new model: forget everything, choose the categories to keep, and refill."""
        model = self.engine.model
        with self._lock:
            names = model.categories if model else ()
            wanted = [c for c in names if not self._configured or c.lower() in {x.lower() for x in self._configured}]
            self._in_use = set(wanted) if names else {None}
        self._restart()

    def params_changed(self, name: str) -> None:
        """A live parameter changed: samples made with other settings are no use any more."""
        if name in _INVALIDATING:
            self._restart()
        elif name == "pool_size":
            with self._lock:
                for stock in self._stock.values():
                    while len(stock) > self.size:
                        stock.pop()
            self.top_up()
        elif name == "batch_size":
            self.top_up()

    def _restart(self) -> None:
        with self._lock:
            self._stock.clear()
            self._keys.clear()
            self._failing.clear()
            jobs, self._jobs = list(self._jobs), set()
            self._in_flight.clear()
        for job in jobs:  # their ends are ignored: the counts were reset above
            try:
                self.engine.cancel(job.id)
            except RequestRejected:
                pass  # it has just ended
        self.top_up()

    def top_up(self) -> None:
        """Submit background refills for every category in use below the pool size."""
        engine, model = self.engine, self.engine.model
        if model is None:
            return
        orders: list[tuple[str | None, int]] = []
        with self._lock:
            if self._closed or self.size <= 0:
                return
            batch = max(1, engine.batch_size())
            for category in sorted(self._in_use - self._failing, key=str):
                try:
                    plan = prepare(RefillRequest(category), model, engine.params, engine.result_path)
                except DDError as exc:  # the model lacks a category someone asked for before a switch
                    log.debug("pool skips %s: %s", category, exc)
                    self._failing.add(category)
                    continue
                key = self._keys.setdefault(category, engine.pool_key(plan, model))
                missing = self.size - len(self._stock.get(key, ())) - self._in_flight[category]
                while missing > 0:
                    n = min(batch, missing)
                    orders.append((category, n))
                    self._in_flight[category] += n
                    missing -= n
        for category, n in orders:
            try:
                job = engine.submit(RefillRequest(category, n), listener=self._on_event)
            except (RequestRejected, DDError) as exc:
                with self._lock:
                    self._in_flight[category] = max(0, self._in_flight[category] - n)
                log.debug("pool refill of %s not queued: %s", category, exc)
                continue
            with self._lock:
                if not job.finished:
                    self._jobs.add(job)

    def _on_event(self, event: JobEvent) -> None:
        if event.kind not in ("done", "error"):
            return
        job, category = event.job, event.job.plan.category
        with self._lock:
            if job not in self._jobs and job.cancelled:
                return  # thrown away by a restart, which has already reset the counts
            self._jobs.discard(job)  # (absent when it ended before top_up recorded it)
            self._in_flight[category] = max(0, self._in_flight[category] - job.plan.n_items)
            result = event.result
            if result is not None and result.key == self._keys.get(category) and not self._closed:
                stock = self._stock.setdefault(result.key, deque())
                for seed, audio in zip(result.seeds, result.audio, strict=True):
                    if len(stock) < self.size:
                        stock.append(PooledSample(seed, audio, result.key))
            elif event.kind == "error" and not isinstance(event.error, Cancelled):
                log.warning("pool refill of %s failed, the pool stops refilling it: %s", category, event.error)
                self._failing.add(category)
        if event.kind == "done" or isinstance(event.error, Cancelled):
            self.top_up()
