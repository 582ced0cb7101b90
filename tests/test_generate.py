"""Generation over a backend: per-item seeds, lengths, variation and morph semantics, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import ConfigError, LengthError
from models.generate import SamplingOptions, generate, morph, variation
from models.samplers import Cancelled
from tests.reference_nets import tiny_backend

FAST = SamplingOptions("dpmpp-2m", steps=4)


@pytest.fixture(scope="module")
def backend():
    return tiny_backend(categories=("kick", "hat"), sample_size=768)


@pytest.mark.parametrize("sampler", ["v-ddim", "v-iplms", "dpmpp-2m", "dpmpp-2m-sde"])
def test_same_seed_same_audio_whatever_the_batch(backend, sampler):
    opts = SamplingOptions(sampler, steps=4)
    batch = generate(backend, [11, 12, 13], category="kick", options=opts)
    single = generate(backend, [12], category="kick", options=opts)
    assert batch.shape == (3, 2, 768)
    np.testing.assert_allclose(batch[1], single[0], atol=2e-5)
    assert not np.allclose(batch[0], batch[1])


def test_category_changes_the_sound(backend):
    kick = generate(backend, [5], category="kick", options=FAST)
    hat = generate(backend, [5], category="hat", options=FAST)
    assert not np.allclose(kick, hat)


def test_lengths_are_padded_then_cropped(backend):
    out = generate(backend, [1], category="kick", length=500, options=FAST)
    assert out.shape == (1, 2, 500)
    with pytest.raises(LengthError, match="positive"):
        generate(backend, [1], category="kick", length=0, options=FAST)


def test_bad_requests_name_the_value(backend):
    with pytest.raises(ConfigError, match="category must be one of"):
        generate(backend, [1], category="snare", options=FAST)
    with pytest.raises(ConfigError, match="needs a category"):
        generate(backend, [1], options=FAST)
    with pytest.raises(ConfigError, match="steps must be an integer in 1..1000"):
        generate(backend, [1], category="kick", options=SamplingOptions("dpmpp-2m", steps=0))
    with pytest.raises(ConfigError, match="unknown sampler"):
        generate(backend, [1], category="kick", options=SamplingOptions("euler-magic"))
    with pytest.raises(ConfigError, match="seed must be an integer"):
        generate(backend, [-4], category="kick", options=FAST)


def test_progress_and_cancel(backend):
    seen = []
    generate(backend, [1], category="kick", options=FAST, progress=lambda i, n: seen.append((i, n)))
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4)]
    with pytest.raises(Cancelled):
        generate(backend, [1], category="kick", options=FAST, cancel=lambda: True)


def test_variation_strength_controls_distance(backend):
    source = generate(backend, [3], category="kick", options=FAST)[0]
    near = variation(backend, source, [9], strength=0.1, category="kick", options=SamplingOptions("v-ddim", 20))
    far = variation(backend, source, [9], strength=1.0, category="kick", options=SamplingOptions("v-ddim", 20))
    assert near.shape == (1, 2, 768)
    assert np.abs(near[0] - source).mean() < np.abs(far[0] - source).mean()
    with pytest.raises(ConfigError, match=r"strength must be in \(0, 1\]"):
        variation(backend, source, [1], strength=0.0, category="kick")


def test_morph_endpoints_reconstruct_sources(backend):
    a = generate(backend, [1], category="kick", options=SamplingOptions("v-ddim", 30))[0]
    b = generate(backend, [2], category="kick", options=SamplingOptions("v-ddim", 30))[0]
    frames = morph(backend, a, b, 5, category="kick", steps=30)
    assert frames.shape == (5, 2, 768)
    err_a = np.abs(frames[0] - a).mean()
    assert err_a < 0.25 * np.abs(a - b).mean()
    assert np.abs(frames[-1] - b).mean() < 0.25 * np.abs(a - b).mean()
    with pytest.raises(ConfigError, match="frames must be an integer in 2..64"):
        morph(backend, a, b, 1, category="kick")


def test_the_models_recommended_sampler_and_steps_apply_when_nothing_is_chosen():
    from models.samplers import DEFAULT_SAMPLER, SAMPLERS
    from tests.reference_nets import tiny_config

    plain = tiny_config()
    assert SamplingOptions().resolved(plain).sampler == DEFAULT_SAMPLER
    assert SamplingOptions().resolved(plain).steps == SAMPLERS[DEFAULT_SAMPLER].default_steps
    fast = tiny_config(sampler="dpmpp-2m", steps=8)
    assert (SamplingOptions().resolved(fast).sampler, SamplingOptions().resolved(fast).steps) == ("dpmpp-2m", 8)
    assert SamplingOptions(steps=12).resolved(fast).steps == 12  # the user's steps win
    chosen = SamplingOptions("v-iplms").resolved(fast)  # another sampler: its own default steps, not the 8
    assert (chosen.sampler, chosen.steps) == ("v-iplms", SAMPLERS["v-iplms"].default_steps)
    with pytest.raises(ConfigError, match="steps must be an integer"):
        tiny_config(steps=0)


def test_the_models_sigma_max_applies_unless_one_is_chosen_and_changes_the_sound(tmp_path):
    import torch

    from companion.engine.model_files import load_backend
    from models.checkpoints import save_model
    from models.config import ModelConfig
    from models.network import DiffusionAttnUnet1D
    from models.schedules import KARRAS_SIGMA_MAX
    from tests.reference_nets import tiny_config

    assert SamplingOptions().resolved(tiny_config()).sigma_max == KARRAS_SIGMA_MAX
    low = tiny_config(sampler="dpmpp-2m-sde", steps=6, sigma_max=10)
    assert SamplingOptions().resolved(low).sigma_max == 10.0
    assert SamplingOptions(sigma_max=50.0).resolved(low).sigma_max == 50.0  # the user's choice wins
    assert ModelConfig.from_json(low.to_json()).sigma_max == 10.0
    with pytest.raises(ConfigError, match="sigma_max must be a number in 1..1000"):
        tiny_config(sigma_max=0)
    with pytest.raises(ConfigError, match="sigma_max must be a number in 1..1000"):
        SamplingOptions(sigma_max=-1.0).resolved(low)
    torch.manual_seed(0)
    backend = load_backend(save_model(DiffusionAttnUnet1D(low), tmp_path / "low.safetensors"), backend="torch")
    assert backend.config.sigma_max == 10.0
    recommended = generate(backend, [3])
    same = generate(backend, [3], options=SamplingOptions(sigma_max=10.0))
    other = generate(backend, [3], options=SamplingOptions(sigma_max=200.0))
    np.testing.assert_array_equal(recommended, same)
    assert np.abs(recommended - other).max() > 1e-3


def test_the_models_rho_applies_unless_one_is_chosen():
    from models.config import ModelConfig
    from models.schedules import KARRAS_RHO
    from tests.reference_nets import tiny_config

    assert SamplingOptions().resolved(tiny_config()).rho == KARRAS_RHO
    spaced = tiny_config(rho=12)
    assert SamplingOptions().resolved(spaced).rho == 12.0
    assert SamplingOptions(rho=5.0).resolved(spaced).rho == 5.0
    assert ModelConfig.from_json(spaced.to_json()).rho == 12.0
    with pytest.raises(ConfigError, match="rho must be a number in 1..50"):
        tiny_config(rho=100)
    with pytest.raises(ConfigError, match="rho must be a number in 1..50"):
        SamplingOptions(rho=0.0).resolved(spaced)
    backend = tiny_backend(rho=12.0)
    fast = SamplingOptions("dpmpp-2m", 4)
    np.testing.assert_array_equal(generate(backend, [2], options=fast),
                                  generate(backend, [2], options=SamplingOptions("dpmpp-2m", 4, rho=12.0)))
    assert np.abs(generate(backend, [2], options=fast) - generate(
        backend, [2], options=SamplingOptions("dpmpp-2m", 4, rho=7.0))).max() > 1e-4


def test_a_model_with_a_recommendation_generates_with_it(tmp_path):
    import torch

    from companion.engine.model_files import load_backend
    from models.checkpoints import save_model
    from models.network import DiffusionAttnUnet1D
    from tests.reference_nets import tiny_config

    torch.manual_seed(0)
    path = save_model(DiffusionAttnUnet1D(tiny_config(sampler="v-ddim", steps=3)), tmp_path / "rec.safetensors")
    backend = load_backend(path, backend="torch")
    assert (backend.config.sampler, backend.config.steps) == ("v-ddim", 3)
    calls = []
    generate(backend, [1], progress=lambda step, steps: calls.append(steps))
    assert calls and calls[-1] == 3
