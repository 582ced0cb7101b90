"""Our v-iplms on the crash schedule against diffusers' DanceDiffusionPipeline + IPNDMScheduler, step by step.

Both sides drive the same tiny random ``UNet1DModel`` in the Dance Diffusion block layout from the same noise.
The pipeline itself is run (its timesteps, its one model call per step, its final clamp), with a hook that
records what the network sees at every step; our sampler's denoiser wraps the very same module.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DanceDiffusionPipeline, IPNDMScheduler, UNet1DModel

from models.samplers import sample_v_iplms
from models.schedules import make_schedule

CHANNELS = (32, 32, 64, 64)
LENGTH = 256  # a multiple of 2**4 (one halving per block) and at least 3 * 2**4
SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def unet():
    # One thread: on a shared 2-core machine two torch threads spin against each other (30x slower here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield build_unet()
    finally:
        torch.set_num_threads(threads)


def build_unet() -> UNet1DModel:
    torch.manual_seed(0)
    model = UNet1DModel(
        sample_size=LENGTH,
        sample_rate=SAMPLE_RATE,
        in_channels=2,
        out_channels=2,
        extra_in_channels=16,
        time_embedding_type="fourier",
        time_embedding_dim=16,  # the Harmonai width: 8 Fourier frequencies (diffusers >= 0.36 defaults to 64)
        flip_sin_to_cos=True,
        use_timestep_embedding=False,
        down_block_types=("DownBlock1DNoSkip", "DownBlock1D", "AttnDownBlock1D", "AttnDownBlock1D"),
        up_block_types=("AttnUpBlock1D", "AttnUpBlock1D", "UpBlock1D", "UpBlock1DNoSkip"),
        mid_block_type="UNetMidBlock1D",
        block_out_channels=CHANNELS,
    )
    # diffusers starts norms at identity and some weights at zero: randomise them all. A scale of 0.14 gives
    # outputs v with a standard deviation of about 1, like a trained network's.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.14)
    return model.eval()


def run_pipeline(unet: UNet1DModel, steps: int, seed: int) -> tuple[np.ndarray, list, list, np.ndarray]:
    """The diffusers pipeline's output, the (sample, t) each network call saw, and the start noise."""
    seen_x, seen_t = [], []

    def record(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        seen_x.append(sample.detach().numpy().copy())
        seen_t.append(float(timestep))

    hook = unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        pipe = DanceDiffusionPipeline(unet=unet, scheduler=IPNDMScheduler(num_train_timesteps=100))
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            audio = pipe(
                batch_size=2,
                num_inference_steps=steps,
                generator=torch.Generator().manual_seed(seed),
                audio_length_in_s=LENGTH / SAMPLE_RATE,
                return_dict=False,
            )[0]
    finally:
        hook.remove()
    return audio, seen_x, seen_t, seen_x[0]


def run_scheduler_loop(unet: UNet1DModel, steps: int, noise: np.ndarray) -> np.ndarray:
    """The pipeline's loop written out (same scheduler calls), to get the final state before its clamp."""
    scheduler = IPNDMScheduler(num_train_timesteps=100)
    scheduler.set_timesteps(steps)
    scheduler.timesteps = scheduler.timesteps.to(torch.float32)
    audio = torch.from_numpy(noise)
    with torch.no_grad():
        for t in scheduler.timesteps:
            audio = scheduler.step(unet(audio, t).sample, t, audio).prev_sample
    return audio.numpy()


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_v_iplms_matches_diffusers_step_for_step(unet, steps):
    reference, their_x, their_t, noise = run_pipeline(unet, steps, seed=steps)
    assert len(their_x) == steps  # diffusers evaluates the network once per step, as we do

    our_x, our_t = [], []

    def denoise(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        our_x.append(x.copy())
        our_t.append(t.copy())
        with torch.no_grad():
            return unet(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()

    rngs = [np.random.default_rng(i) for i in range(2)]
    ours = sample_v_iplms(denoise, noise, make_schedule("crash", steps), rngs)

    assert len(our_x) == steps
    for i in range(steps):
        np.testing.assert_allclose(our_t[i], their_t[i], atol=1e-6, err_msg=f"time of step {i}")
        np.testing.assert_allclose(our_x[i], their_x[i], atol=1e-4, rtol=0, err_msg=f"state before step {i}")
    unclamped = run_scheduler_loop(unet, steps, noise)
    # The written-out loop is the pipeline's: identical after the pipeline's clamp.
    np.testing.assert_array_equal(np.clip(unclamped, -1, 1), reference)
    np.testing.assert_allclose(ours, unclamped, atol=1e-4, rtol=0)
    if steps == 1:  # one step from pure noise: both sides give silence (the data estimate at t'=1 is 0)
        assert not np.any(unclamped) and not np.any(ours)
    else:  # a real signal, not a trivial match
        assert np.abs(unclamped).std() > 0.1


def test_the_comparison_detects_a_different_sampler(unet):
    # Guard against a vacuous match: the same comparison fails for a sampler that is not IPNDM.
    from models.samplers import sample_v_ddim

    _, _, _, noise = run_pipeline(unet, 10, seed=1)
    reference = run_scheduler_loop(unet, 10, noise)

    def denoise(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return unet(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()

    rngs = [np.random.default_rng(i) for i in range(2)]
    other = sample_v_ddim(denoise, noise, make_schedule("crash", 10), rngs)
    assert np.abs(other - reference).max() > 1e-2
