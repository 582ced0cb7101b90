"""A pack on a Ray cluster: one actor per worker keeps the model resident, chunks of sounds are its tasks.

The driver (the ``dd-companion pack`` process) plans the pack, hands out chunks of sounds, and writes
every WAV itself as results stream back, through the same atomic path as a single-machine run; a
worker only renders bytes. Each actor asks for ``threads`` CPUs and loads the model with that many
runtime threads, so its sounds are bit-identical to a single-machine run of the same spec.

An actor that dies (its process killed, its node lost) fails the chunks it held; those go back in
the queue, a fresh actor takes the dead one's place, and the chunk is rendered again (at most
:data:`MAX_TRIES` times). Ray is imported here only, and only when a pack asks for it.
"""

from __future__ import annotations

import importlib
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from companion.pack.render import Renderer, RenderSetup
from companion.pack.spec import Sound
from models.errors import ConfigError, DDError

MAX_TRIES = 4  # renders of one chunk before the pack gives up
IN_FLIGHT = 2  # chunks queued per actor, so it never waits for the driver


class RayPackError(DDError):
    """The Ray cluster cannot be reached, or its workers keep dying."""

    code = "ray_error"


@dataclass
class RayStats:
    workers: int
    chunks: int
    retried: int  # chunks rendered again after their worker died
    replaced: int  # actors started in place of dead ones
    per_worker: dict[str, int]  # worker id -> sounds it rendered
    startup_s: float = 0.0  # connecting and starting the actors (each loading the model)
    render_s: float = 0.0  # from the first chunk handed out to the last result written


class PackWorker:
    """The actor: a resident :class:`Renderer` (wrapped by ``ray.remote`` in :func:`render_on_ray`)."""

    def __init__(self, setup: RenderSetup) -> None:
        self.renderer = Renderer(setup)

    def hello(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "facts": self.renderer.fingerprint}

    def render(self, sounds: Sequence[Sound]) -> list[tuple[str, bytes]]:
        return [(sound.name, self.renderer.render(sound)) for sound in sounds]


def import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ConfigError("pack --ray needs Ray: pip install 'dd-companion[ray]'") from None


def connect(ray: Any, address: str) -> None:
    """``auto``: a running cluster if there is one, else a local one on this machine's cores."""
    if ray.is_initialized():
        return
    quiet = {"log_to_driver": False, "logging_level": "ERROR"}
    try:
        if address == "auto":
            try:
                ray.init(address="auto", **quiet)
            except ConnectionError:
                ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayPackError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None


def render_on_ray(setup: RenderSetup, facts: dict[str, Any], todo: Sequence[Sound], done: Callable[[Sound, bytes], None],
                  *, address: str = "auto", workers: int | None = None, chunk: int = 4) -> RayStats:
    """Render ``todo`` on the cluster; ``done(sound, wav_bytes)`` runs in this process for each result."""
    ray = import_ray()
    begin = time.perf_counter()
    connect(ray, address)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    count = workers or max(1, cpus // setup.threads)
    if count * setup.threads > cpus:
        raise RayPackError(f"{count} workers of {setup.threads} thread(s) need {count * setup.threads} CPUs; the "
                           f"cluster has {cpus}")
    actor_class = ray.remote(num_cpus=setup.threads, max_restarts=0, max_task_retries=0)(PackWorker)
    by_name = {s.name: s for s in todo}
    chunks = deque((i, list(todo[k:k + chunk])) for i, k in enumerate(range(0, len(todo), chunk)))
    tries = {i: 0 for i, _ in chunks}
    stats = RayStats(count, len(chunks), 0, 0, {})
    actors: dict[int, Any] = {}
    next_id = 0

    def start() -> None:
        nonlocal next_id
        actors[next_id] = actor_class.remote(setup)
        next_id += 1

    for _ in range(count):
        start()
    for wid, actor in list(actors.items()):  # every worker must hold the model this pack's recipes name
        info = ray.get(actor.hello.remote())
        theirs = {k: info["facts"].get(k) for k in ("model_hash", "backend", "threads", "runtime")}
        ours = {k: facts.get(k) for k in theirs}
        if theirs != ours:
            raise RayPackError(f"worker {wid} (pid {info['pid']}) loaded {theirs}, the driver {ours}: every node "
                               "needs the same model file and runtime version")
    pending: dict[Any, tuple[int, int, list[Sound]]] = {}  # ref -> (worker, chunk id, sounds)
    stats.startup_s = time.perf_counter() - begin

    def feed() -> None:
        for wid, actor in list(actors.items()):
            while chunks and sum(1 for w, _, _ in pending.values() if w == wid) < IN_FLIGHT:
                cid, sounds = chunks.popleft()
                tries[cid] += 1
                pending[actor.render.remote(sounds)] = (wid, cid, sounds)

    feed()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            wid, cid, sounds = pending.pop(ref)
            try:
                results = ray.get(ref)
            except ray.exceptions.RayActorError:
                if tries[cid] >= MAX_TRIES:
                    raise RayPackError(f"a chunk of {len(sounds)} sounds (first: {sounds[0].name}) failed "
                                       f"{MAX_TRIES} times: its workers died") from None
                chunks.appendleft((cid, sounds))
                stats.retried += 1
                if wid in actors:  # the first failed chunk of a dead actor replaces it
                    del actors[wid]
                    start()
                    stats.replaced += 1
                feed()
                continue
            except ray.exceptions.RayTaskError as exc:
                raise RayPackError(f"a worker failed on {sounds[0].name}: {exc}") from None
            for name, data in results:
                done(by_name[name], data)
            stats.per_worker[str(wid)] = stats.per_worker.get(str(wid), 0) + len(results)
            feed()
        stats.render_s = time.perf_counter() - begin - stats.startup_s
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        for actor in actors.values():
            ray.kill(actor)
    return stats
