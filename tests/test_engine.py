"""The engine in-process with tiny random models: results, seeds, batching, priorities, the queue bound,
cancellation, progress, model switching, validation and disk errors."""

from __future__ import annotations

import errno
import json
import re
import threading
import time

import numpy as np
import pytest
import soundfile as sf

import companion.output.folder as folder_mod
from companion.config.settings import Params, SettingsError
from companion.engine.engine import Engine
from companion.engine.model_files import load_backend
from companion.engine.requests import (
    BusyError,
    GenerateRequest,
    LoadModelRequest,
    MorphRequest,
    NotFoundError,
    OutOfRangeError,
    RefillRequest,
    RequestRejected,
    UnknownJobError,
    VariationRequest,
)
from companion.output.folder import DiskFullError, FolderUnwritableError, SampleFolder
from models.audio_io import AudioFileError
from models.errors import CheckpointError
from models.samplers import Cancelled
from tests.reference_nets import save_tiny

WAIT = 30.0


class SlowBackend:
    """A real backend whose denoiser sleeps and records batch sizes (to see batching and cancel mid-job)."""

    def __init__(self, inner, delay=0.0):
        self.inner, self.delay, self.batches = inner, delay, []
        for name in ("config", "kind", "device", "model_hash", "source"):
            setattr(self, name, getattr(inner, name))

    def denoiser(self, labels):
        denoise = self.inner.denoiser(labels)

        def slow(x, t):
            self.batches.append(x.shape[0])
            time.sleep(self.delay)
            return denoise(x, t)

        return slow

    def describe(self):
        return self.inner.describe()




@pytest.fixture
def make_engine(tmp_path, model_file):
    engines = []

    def make(delay=0.0, start=True, queue_limit=16, **params):
        backends = []

        def loader(model, **options):
            backend = SlowBackend(load_backend(model, device="cpu"), delay)
            backends.append(backend)
            return backend

        engine = Engine(SampleFolder(tmp_path / "out"), params=Params(**{"steps": 3, "pool_size": 0, **params}),
                        queue_limit=queue_limit, loader=loader)
        engine.load(model_file)
        engine.backends = backends
        engines.append(engine)
        if start:
            engine.start()
        return engine

    yield make
    for engine in engines:
        engine.shutdown(10)


def events_of(engine):
    seen = []
    engine.add_listener(seen.append)
    return seen


def test_generate_writes_wavs_with_echoed_seeds_and_recipe(make_engine):
    engine = make_engine()
    result = engine.submit(GenerateRequest("KICK", count=3, seed=100)).future.result(WAIT)
    assert result.seeds == (100, 101, 102) and result.category == "kick" and result.kind == "generate"
    assert len(result.paths) == 3
    for path, seed in zip(result.paths, result.seeds, strict=True):
        audio, rate = sf.read(path)
        assert rate == 16000 and audio.shape == (512, 2) and np.isfinite(audio).all()
        recipe = json.loads(path.with_suffix(".json").read_text())["recipe"]
        assert recipe["seed"] == seed and recipe["steps"] == 3 and recipe["model"] == "tiny"
        assert recipe["model_hash"] == engine.model.model_hash


def test_same_seed_same_sound_whether_batched_or_not(make_engine):
    engine = make_engine(start=False, batch_size=4)
    jobs = [engine.submit(GenerateRequest("kick", seed=s)) for s in (7, 8, 9)]
    other = engine.submit(GenerateRequest("snare", seed=7))
    engine.start()
    results = [job.future.result(WAIT) for job in jobs]
    other.future.result(WAIT)
    assert engine.backends[0].batches[:3] == [3, 3, 3]  # the three kicks shared every step
    assert engine.backends[0].batches[3:] == [1, 1, 1]  # the snare is not compatible
    alone = engine.submit(GenerateRequest("kick", seed=8)).future.result(WAIT)
    np.testing.assert_allclose(sf.read(alone.paths[0])[0], sf.read(results[1].paths[0])[0], atol=1e-5)
    assert [r.seeds for r in results] == [(7,), (8,), (9,)]


def test_live_requests_run_before_background_refills(make_engine):
    engine = make_engine(start=False)
    order = []  # the worker's events: the live job's progress, the refill's end (its write comes later)
    engine.add_listener(lambda e: order.append((e.job.kind, e.kind)) if e.kind in ("progress", "done") else None)
    refill = engine.submit(RefillRequest("kick", 1))
    live = engine.submit(GenerateRequest("snare"))
    engine.start()
    live.future.result(WAIT)
    refill.future.result(WAIT)
    rendered = [kind for kind, event in order if (kind, event) in (("generate", "progress"), ("refill", "done"))]
    assert rendered[0] == "generate" and rendered[-1] == "refill" and rendered.count("refill") == 1
    assert refill.future.result().paths == () and refill.future.result().audio[0].shape == (2, 512)


def test_full_queue_answers_busy_and_never_grows(make_engine):
    engine = make_engine(start=False, queue_limit=2)
    accepted = [engine.submit(GenerateRequest("kick")) for _ in range(2)]
    with pytest.raises(BusyError, match="2 jobs are already queued") as err:
        engine.submit(GenerateRequest("kick"))
    assert err.value.code == "busy"
    engine.submit(RefillRequest("kick"))  # background refills are bounded by the pool, not this limit
    engine.start()
    for job in accepted:
        assert len(job.future.result(WAIT).paths) == 1
    engine.submit(GenerateRequest("kick")).future.result(WAIT)  # room again


def test_cancel_mid_sampling_stops_within_a_step(make_engine, tmp_path):
    engine = make_engine(delay=0.02)
    started = threading.Event()
    job = engine.submit(GenerateRequest("kick", steps=500),
                        listener=lambda e: started.set() if e.kind == "progress" else None)
    assert started.wait(WAIT)
    t0 = time.monotonic()
    engine.cancel(job.id)
    with pytest.raises(Cancelled, match=f"job {job.id} was cancelled"):
        job.future.result(WAIT)
    assert time.monotonic() - t0 < 2.0
    assert len(engine.backends[0].batches) < 400
    assert not list((tmp_path / "out").rglob("*.wav"))
    assert engine.submit(GenerateRequest("kick")).future.result(WAIT).paths  # still serving


def test_cancel_queued_job_ends_it_at_once_and_unknown_jobs_are_refused(make_engine):
    engine = make_engine(start=False)
    seen = events_of(engine)
    job = engine.submit(GenerateRequest("kick"))
    engine.cancel(job.id)
    assert job.future.exception(0).code == "cancelled"
    assert [e.kind for e in seen] == ["queued", "error"]
    with pytest.raises(UnknownJobError, match="job 999 is neither queued nor running"):
        engine.cancel(999)
    with pytest.raises(UnknownJobError):
        engine.cancel(job.id)  # already ended
    engine.submit(GenerateRequest("kick"))
    assert engine.cancel_all() == 1


def test_progress_is_throttled_and_rises(make_engine):
    engine = make_engine(delay=0.01)
    seen = events_of(engine)
    t0 = time.monotonic()
    engine.submit(GenerateRequest("kick", count=2, steps=25)).future.result(WAIT)
    elapsed = time.monotonic() - t0
    fractions = [e.fraction for e in seen if e.kind == "progress"]
    assert fractions and fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] <= 1.0
    assert len(fractions) <= elapsed * 20 + 2  # at most 20 per second
    assert [e.kind for e in seen][0] == "queued" and [e.kind for e in seen][-1] == "done"


@pytest.mark.parametrize(
    "request_, error, needle",
    [
        (GenerateRequest("hat"), NotFoundError, "category 'hat' not found; model 'tiny' has: kick, snare, clap"),
        (GenerateRequest(None), NotFoundError, "needs a category"),
        (GenerateRequest("kick", steps=0), OutOfRangeError, "steps must be an integer in 1..1000, got 0"),
        (GenerateRequest("kick", count=65), OutOfRangeError, "count must be an integer in 1..64, got 65"),
        (GenerateRequest("kick", seed=2**31), OutOfRangeError, "seed must be an integer"),
        (GenerateRequest("kick", seconds=0.001), OutOfRangeError, "seconds must be at least"),
        (GenerateRequest("kick", sampler="euler"), RequestRejected, "unknown sampler 'euler'"),
        (VariationRequest("/no/such/file.wav"), NotFoundError, "source file '/no/such/file.wav' does not exist"),
        (VariationRequest("job:99"), NotFoundError, "job 99 has no result"),
        (MorphRequest("/a.wav", "/b.wav", frames=1), OutOfRangeError, "frames must be an integer in 2..64"),
        (LoadModelRequest("no-such-model"), NotFoundError, "model 'no-such-model' not found"),
    ],
)
def test_invalid_requests_are_refused_before_the_worker(make_engine, request_, error, needle):
    engine = make_engine(start=False)
    seen = events_of(engine)
    with pytest.raises(error, match=needle.replace("(", r"\(").replace(".", r"\.")):
        engine.submit(request_)
    assert seen == [] and engine.status().queued == 0


def test_strength_and_unreadable_sources(make_engine, tmp_path):
    engine = make_engine()
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    with pytest.raises(AudioFileError, match="cannot read 'notes.wav' as audio"):
        engine.submit(VariationRequest(text, category="kick"))
    kick = engine.submit(GenerateRequest("kick", seed=1)).future.result(WAIT)
    with pytest.raises(OutOfRangeError, match=r"strength must be in \(0, 1\], got 0"):
        engine.submit(VariationRequest(kick.paths[0], strength=0))


def test_variation_of_an_earlier_result_and_a_morph(make_engine):
    engine = make_engine()
    first = engine.submit(GenerateRequest("snare", seed=3)).future.result(WAIT)
    var = engine.submit(VariationRequest(f"job:{first.job}", strength=0.5, count=2, seed=10)).future.result(WAIT)
    assert var.kind == "variation" and var.category == "snare" and var.seeds == (10, 11)  # category from the file
    recipe = json.loads(var.paths[0].with_suffix(".json").read_text())["recipe"]
    assert recipe["strength"] == 0.5 and recipe["sources"] == [str(first.paths[0])]
    morph = engine.submit(MorphRequest(first.paths[0], f"job:{var.job}:1", frames=3, steps=2)).future.result(WAIT)
    assert [p.name.rsplit("_", 1)[1] for p in morph.paths] == ["f00.wav", "f01.wav", "f02.wav"]
    assert len({p.name.split("_")[3] for p in morph.paths}) == 1  # one series counter


def test_failed_model_load_keeps_the_previous_model(make_engine, tmp_path):
    engine = make_engine()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    job = engine.submit(LoadModelRequest(broken))
    with pytest.raises(CheckpointError) as err:
        job.future.result(WAIT)
    assert err.value.code == "bad_model" and engine.model.name == "tiny" and engine.status().state == "idle"
    assert engine.submit(GenerateRequest("kick")).future.result(WAIT).model == "tiny"


def test_unexpected_loader_failure_is_reported_as_bad_model(make_engine, model_file):
    engine = make_engine()

    def exploding(model, **options):
        raise RuntimeError("CUDA driver exploded")

    engine._loader = exploding
    with pytest.raises(CheckpointError, match="CUDA driver exploded"):
        engine.submit(LoadModelRequest(model_file)).future.result(WAIT)
    assert engine.model.name == "tiny"


def test_switch_model_while_the_old_one_keeps_serving(make_engine, tmp_path):
    engine = make_engine()
    other = save_tiny(tmp_path / "drums.safetensors", categories=("tom", "perc"), name="drums", seed=1)
    gate = threading.Event()
    real = engine._loader

    def slow_loader(model, **options):
        gate.wait(WAIT)
        return real(model, **options)

    engine._loader = slow_loader
    load = engine.submit(LoadModelRequest(other))
    assert engine.status().state == "loading"
    with pytest.raises(BusyError, match="still loading"):
        engine.submit(LoadModelRequest(other))
    assert engine.submit(GenerateRequest("kick")).future.result(WAIT).model == "tiny"  # old model serves
    gate.set()
    assert load.future.result(WAIT).model == "drums"
    assert engine.model.categories == ("tom", "perc") and engine.status().state == "idle"
    with pytest.raises(NotFoundError, match="model 'drums' has: tom, perc"):
        engine.submit(GenerateRequest("kick"))
    assert engine.submit(GenerateRequest("perc")).future.result(WAIT).model == "drums"


@pytest.mark.parametrize("code, error", [(errno.ENOSPC, DiskFullError), (errno.EACCES, FolderUnwritableError)])
def test_disk_errors_fail_the_job_and_the_engine_keeps_serving(make_engine, monkeypatch, tmp_path, code, error):
    engine = make_engine()
    seen = events_of(engine)

    def failing(*args):
        raise OSError(code, "simulated")

    monkeypatch.setattr(folder_mod, "_write_all", failing)
    job = engine.submit(GenerateRequest("kick"))
    with pytest.raises(error):
        job.future.result(WAIT)
    assert seen[-1].kind == "error" and seen[-1].error.code in ("disk_full", "folder_unwritable")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and "manifest" not in p.name]
    monkeypatch.undo()
    assert engine.submit(GenerateRequest("kick")).future.result(WAIT).paths[0].is_file()


def test_live_parameters(make_engine):
    engine = make_engine()
    assert engine.get_param("steps") == 3 and engine.get_param("batch_size") == 1
    assert engine.get_param("seconds") == pytest.approx(512 / 16000)
    assert engine.set_param("steps", 5) == 5
    assert engine.submit(GenerateRequest("kick")).future.result(WAIT) and engine.params.steps == 5
    with pytest.raises(SettingsError, match="sampler must be one of") as err:
        engine.set_param("sampler", "euler")
    assert err.value.code == "bad_config"
    with pytest.raises(SettingsError, match=r"seconds must be in 0.05..60, got 0.01") as err:
        engine.set_param("seconds", 0.01)
    assert err.value.code == "out_of_range"
    with pytest.raises(SettingsError, match="unknown setting 'colour'") as err:
        engine.get_param("colour")
    assert err.value.code == "unknown_param"
    engine.set_param("seed", 42)
    assert engine.submit(GenerateRequest("kick", count=2)).future.result(WAIT).seeds == (42, 43)


def recipe_of(path):
    return json.loads(path.with_suffix(".json").read_text())["recipe"]


def test_live_guidance_applies_to_generations_and_variations_but_not_morphs(make_engine):
    engine = make_engine()
    seen = []
    engine.backends[0].denoiser = lambda labels, inner=engine.backends[0].denoiser: seen.append(labels) or inner(labels)
    assert engine.get_param("guidance") == 1.0  # the tiny model recommends none
    plain = engine.submit(GenerateRequest("kick", seed=5)).future.result(WAIT)
    assert engine.set_param("guidance", 3) == 3.0 and type(engine.params.guidance) is float
    guided = engine.submit(GenerateRequest("kick", seed=5)).future.result(WAIT)
    assert recipe_of(plain.paths[0])["guidance"] == 1.0 and recipe_of(guided.paths[0])["guidance"] == 3.0
    assert np.abs(sf.read(guided.paths[0])[0] - sf.read(plain.paths[0])[0]).max() > 1e-3
    assert any(labels is not None and -1 in labels for labels in seen)  # the unconditional half of the batch
    var = engine.submit(VariationRequest(guided.paths[0], seed=1)).future.result(WAIT)
    assert recipe_of(var.paths[0])["guidance"] == 3.0
    own = engine.submit(GenerateRequest("kick", seed=5, guidance=2.5)).future.result(WAIT)  # a request's own wins
    assert recipe_of(own.paths[0])["guidance"] == 2.5
    seen.clear()
    morph = engine.submit(MorphRequest(plain.paths[0], guided.paths[0], frames=2, steps=2))
    assert morph.plan.options.guidance == 1.0
    assert all(recipe_of(p)["guidance"] == 1.0 for p in morph.future.result(WAIT).paths)
    assert not any(labels is not None and -1 in labels for labels in seen)  # morphs stay unguided


@pytest.mark.parametrize(
    "value, code, needle",
    [(25, "out_of_range", "guidance must be in 1..20, got 25.0"), (0.5, "out_of_range", "guidance must be in 1..20"),
     ("high", "bad_type", "guidance must be a finite number, got 'high'"),
     (True, "bad_type", "guidance must be a finite number, got True")],
)
def test_bad_guidance_names_the_value_and_the_range(make_engine, value, code, needle):
    engine = make_engine(start=False)
    with pytest.raises(SettingsError, match=re.escape(needle)) as err:
        engine.set_param("guidance", value)
    assert err.value.code == code and engine.params.guidance is None
    with pytest.raises(OutOfRangeError, match=r"guidance must be a number in 1\.\.20 \(1 = none\), got 30"):
        engine.submit(GenerateRequest("kick", guidance=30))


def test_an_unconditional_model_refuses_guidance_and_renders_unguided(make_engine, tmp_path):
    engine = make_engine(guidance=4.0)
    assert engine.get_param("guidance") == 4.0
    plain = save_tiny(tmp_path / "plain.safetensors", categories=(), name="plain")
    engine.submit(LoadModelRequest(plain)).future.result(WAIT)
    assert engine.get_param("guidance") == 1.0  # the setting stays, for the next model with categories
    result = engine.submit(GenerateRequest(seed=2)).future.result(WAIT)
    assert recipe_of(result.paths[0])["guidance"] == 1.0
    with pytest.raises(SettingsError, match="guidance 3 needs a model with categories; model 'plain' is "
                       "unconditional") as err:
        engine.set_param("guidance", 3)
    assert err.value.code == "bad_config" and engine.set_param("guidance", 1) == 1.0


def test_the_loaded_models_recommendation_is_the_default_sampler_and_steps(tmp_path):
    import torch

    from models.checkpoints import save_model
    from models.network import DiffusionAttnUnet1D
    from models.samplers import SAMPLERS
    from tests.reference_nets import tiny_config

    torch.manual_seed(0)
    model = save_model(DiffusionAttnUnet1D(tiny_config(categories=("kick",), sampler="v-ddim", steps=4,
                                                       guidance=2.0)), tmp_path / "rec.safetensors")
    engine = Engine(SampleFolder(tmp_path / "out"), params=Params(pool_size=0))
    engine.load(model, device="cpu")
    engine.start()
    try:
        assert (engine.get_param("sampler"), engine.get_param("steps"), engine.get_param("guidance")) == \
            ("v-ddim", 4, 2.0)
        result = engine.submit(GenerateRequest("kick", seed=1)).future.result(WAIT)
        recipe = json.loads(result.paths[0].with_suffix(".json").read_text())["recipe"]
        assert (recipe["sampler"], recipe["steps"], recipe["guidance"]) == ("v-ddim", 4, 2.0)
        engine.set_param("sampler", "v-iplms")  # a choice of the user's: that sampler's own default steps
        assert engine.get_param("steps") == SAMPLERS["v-iplms"].default_steps
    finally:
        engine.shutdown(10)


def test_shutdown_cancels_queued_and_running_jobs(make_engine, tmp_path):
    engine = make_engine(delay=0.01)
    jobs = [engine.submit(GenerateRequest("kick", steps=300)) for _ in range(3)]
    time.sleep(0.1)
    engine.shutdown(10)
    for job in jobs:
        assert isinstance(job.future.exception(WAIT), Cancelled)
    assert not list((tmp_path / "out").rglob("*.partial"))
    with pytest.raises(BusyError, match="shutting down"):
        engine.submit(GenerateRequest("kick"))
