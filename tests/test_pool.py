"""The pre-render pool: K per category ahead, instant answers, refills, invalidation, pre-emption."""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import pytest
import soundfile as sf

from companion.config.settings import Params
from companion.engine.engine import Engine
from companion.engine.model_files import load_backend
from companion.engine.pool import Pool
from companion.engine.requests import GenerateRequest, LoadModelRequest
from companion.output.folder import SampleFolder
from tests.reference_nets import save_tiny
from tests.test_engine import SlowBackend

WAIT = 30.0




@pytest.fixture
def make_pool(tmp_path, model_file):
    made = []

    def make(pool_size=2, categories=(), delay=0.0, **params):
        backends = []

        def loader(model, **options):
            backends.append(SlowBackend(load_backend(model, device="cpu"), delay))
            return backends[-1]

        engine = Engine(SampleFolder(tmp_path / "out"), loader=loader,
                        params=Params(**{"steps": 3, "pool_size": pool_size, **params}))
        engine.load(model_file)
        engine.backends = backends
        pool = Pool(engine, categories)
        engine.start()
        pool.start()
        made.append(engine)
        return engine, pool

    yield make
    for engine in made:
        engine.shutdown(10)


def wait_until(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)


def test_pool_keeps_k_per_category_answers_at_once_and_refills(make_pool):
    engine, pool = make_pool(pool_size=3)
    wait_until(lambda: pool.counts() == {"kick": 3, "snare": 3, "clap": 3})
    durations, jobs = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        jobs.append(engine.submit(GenerateRequest("kick")))
        durations.append(time.perf_counter() - t0)
    print("pooled submit durations", durations)
    assert statistics.median(durations) < 0.010, durations  # the write happens afterwards, in the writer
    for job in jobs:
        result = job.future.result(WAIT)
        assert result.pooled == 1 and sf.read(result.paths[0])[0].shape == (512, 2)
    wait_until(lambda: pool.counts()["kick"] == 3)  # refilled


def test_a_pooled_sample_is_exactly_what_its_recipe_says(make_pool):
    engine, pool = make_pool(pool_size=1)
    wait_until(lambda: pool.counts()["snare"] == 1)
    pooled = engine.submit(GenerateRequest("snare")).future.result(WAIT)
    assert pooled.pooled == 1
    recipe = json.loads(pooled.paths[0].with_suffix(".json").read_text())["recipe"]
    again = engine.submit(GenerateRequest("snare", seed=recipe["seed"])).future.result(WAIT)
    assert again.pooled == 0  # a named seed never comes from the pool
    np.testing.assert_allclose(sf.read(again.paths[0])[0], sf.read(pooled.paths[0])[0], atol=1e-5)


def test_fresh_requests_and_discard_bypass_the_pool(make_pool):
    engine, pool = make_pool(pool_size=2)
    wait_until(lambda: pool.counts()["clap"] == 2)
    assert engine.submit(GenerateRequest("clap", fresh=True)).future.result(WAIT).pooled == 0
    assert pool.counts()["clap"] == 2
    assert pool.discard("clap") == 2 and pool.counts()["clap"] == 0  # (a refill takes milliseconds)


def test_pool_size_zero_renders_nothing_ahead(make_pool):
    engine, pool = make_pool(pool_size=0)
    time.sleep(0.3)
    assert engine.backends[0].batches == [] and set(pool.counts().values()) == {0}
    assert engine.submit(GenerateRequest("kick")).future.result(WAIT).pooled == 0
    assert engine.set_param("pool_size", 1) == 1
    wait_until(lambda: pool.counts() == {"kick": 1, "snare": 1, "clap": 1})


def test_configured_categories_first_then_whatever_is_asked_for(make_pool):
    engine, pool = make_pool(pool_size=1, categories=("Snare",))
    wait_until(lambda: pool.counts() == {"snare": 1})
    engine.submit(GenerateRequest("kick")).future.result(WAIT)
    wait_until(lambda: pool.counts() == {"snare": 1, "kick": 1})


def test_new_steps_or_a_new_model_throw_the_pool_away(make_pool, tmp_path):
    engine, pool = make_pool(pool_size=1)
    wait_until(lambda: pool.counts()["kick"] == 1)
    engine.set_param("steps", 4)
    wait_until(lambda: pool.counts()["kick"] == 1)
    result = engine.submit(GenerateRequest("kick")).future.result(WAIT)
    assert result.pooled == 1
    assert json.loads(result.paths[0].with_suffix(".json").read_text())["recipe"]["steps"] == 4

    other = save_tiny(tmp_path / "drums.safetensors", categories=("tom", "perc"), name="drums", seed=1)
    engine.submit(LoadModelRequest(other)).future.result(WAIT)
    wait_until(lambda: pool.counts() == {"tom": 1, "perc": 1})
    tom = engine.submit(GenerateRequest("tom")).future.result(WAIT)
    assert tom.pooled == 1 and tom.model == "drums"
    recipe = json.loads(tom.paths[0].with_suffix(".json").read_text())["recipe"]
    assert recipe["model_hash"] == engine.model.model_hash


def test_new_guidance_throws_the_pool_away_and_refills_it_guided(make_pool):
    engine, pool = make_pool(pool_size=1)
    wait_until(lambda: pool.counts()["kick"] == 1)
    engine.set_param("guidance", 3)
    wait_until(lambda: pool.counts()["kick"] == 1)
    result = engine.submit(GenerateRequest("kick")).future.result(WAIT)
    assert result.pooled == 1  # a pool still keyed by the old guidance would answer nothing
    assert json.loads(result.paths[0].with_suffix(".json").read_text())["recipe"]["guidance"] == 3.0
    wait_until(lambda: pool.counts()["snare"] == 1)  # a guidance-3 snare is ready
    engine.set_param("guidance", 1)
    stale = engine.submit(GenerateRequest("snare")).future.result(WAIT)  # never the guidance-3 one
    assert json.loads(stale.paths[0].with_suffix(".json").read_text())["recipe"]["guidance"] == 1.0
    wait_until(lambda: pool.counts()["snare"] == 1)
    snare = engine.submit(GenerateRequest("snare")).future.result(WAIT)
    assert snare.pooled == 1
    assert json.loads(snare.paths[0].with_suffix(".json").read_text())["recipe"]["guidance"] == 1.0


def test_a_live_request_pre_empts_a_refill(make_pool):
    engine, pool = make_pool(pool_size=1, categories=("kick",), delay=0.01, steps=300)
    wait_until(lambda: len(engine.backends[0].batches) > 2)  # a refill is rendering (~3 s in all)
    t0 = time.monotonic()
    live = engine.submit(GenerateRequest("snare", steps=3)).future.result(WAIT)
    assert time.monotonic() - t0 < 1.5 and live.pooled == 0
    assert pool.counts()["kick"] == 0  # the refill yielded; it is queued again, not lost
    before = len(engine.backends[0].batches)
    wait_until(lambda: len(engine.backends[0].batches) > before + 2)
