"""The embedded default model: its architecture and the recipe that trains it from the built-in synthesizer.

The architecture was chosen for CPU speed: nine levels (the innermost at 1/256 of the sample rate, 172 Hz
at 44.1 kHz) with narrow channels, about 3.6M parameters, attention on the two innermost levels only. A
forward pass over 0.74 s of stereo costs tens of milliseconds on a laptop core, so 50 sampler steps stay
interactive without a GPU.

Three stages. Stage 1 trains that network from scratch (``STAGE1_RECIPE``, below). Stage 2 (``STAGE2_RECIPE``)
gives stage 1's model per-level conditioning (``ModelConfig.level_cond``, zero-initialised so it starts as
exactly the stage-1 model) and fine-tunes it with 15% label dropout, so that it can be steered with
classifier-free guidance. Why: stage 1's model made one-shots of the right shapes, but the classifier of
``benchmarks/quality.py`` recognised fewer than half of them as their category. Its only view of the category
(and of the noise level) was 16 planes concatenated to its input and squeezed through the first level's 8
channels at the full sample rate; the inner levels, where a sound's character is decided, learned of them
only through that. Stage 2 adds 50,664 parameters and no measurable step time. Stage 3 (``DEFAULT_RECIPE``)
distils stage 2's guidance into the network (``TrainOptions.distill_guidance``): guidance 2 needed two
network calls per sampler step, the shipped model gives the same in one (1.5-1.9x faster on this CPU, where
one call of twice the batch costs about 1.5x a single one).

Stage 1's recipe, and why (Dance Diffusion's own values are in brackets):

- data: the built-in synthesizer, seed 0, a fresh sound for every item (no epochs, no over-fitting), the
  ten categories balanced (item i has category i mod 10).
- lr 3e-4 with a 200-step linear warm-up [4e-5, none]. Harmonai's 4e-5 is for 221M-parameter networks
  and for fine-tunes, where small steps keep what the model knows; a 3.6M-parameter network trained from
  scratch on a CPU budget of a few thousand steps learns several times faster at 2e-4..5e-4 (the usual
  range for small U-Nets with Adam), and the warm-up keeps the first updates, taken while Adam's second
  moments are still noisy, from blowing up the GroupNorm-free last block.
- batch 8, no accumulation [8 x 4]: on two shared CPU cores a step of 8 x 32768 stereo samples takes
  seconds, and at this budget more, smaller steps beat fewer large ones.
- EMA 0.95 for the first 200 steps, then 0.995 [0.95 for 25 epochs, then 0.995]. A 0.999 EMA averages
  over ~1000 steps, about half of the whole run, and would mostly average in the under-trained early
  weights; 0.995 (a ~200-step horizon) smooths the last tenth of the run.
- t drawn from a scrambled Sobol sequence through the crash schedule, plain MSE on v, phase flips only:
  exactly as upstream, so the shipped model behaves like a small Dance Diffusion.
- lr 3e-4, then 1.5e-4 from step 3,697 and 5e-5 from step 6,461 (``lr_drops``); 7,554 steps in all. The
  loss (mean of 250 steps) sat at 0.096-0.098 from step ~2,500 at 3e-4, fell to 0.087 after the first
  drop and to 0.083 after the second; sample quality followed (``benchmarks/quality.py``: Fréchet distance
  21.7x the floor at step ~2,900, 6.5x at 7,554 with the recommended sampler).
- stop after 100 minutes of wall-clock time per run (checkpoint and export; run it again to resume),
  exporting the EMA weights every 10 minutes so a usable model exists early, demos every 15 minutes.
  The shipped weights took about 4.1 hours of CPU time over six runs (88 min at the start on a CPU
  shared with other work, later ones at 0.78 steps/s with two threads on the idle machine).
- recommended sampling, stored in the model: DPM++ 2M SDE x 30 on the karras schedule, the best Fréchet
  distance of the samplers measured on the final weights (dpmpp-2m x 10/20, v-iplms x 30,
  dpmpp-2m-sde x 12/20/30; see docs/default-model.md). The shipped model (stage 3) recommends x 20 from sigma_k 10 with rho 12.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from models import synth
from models.config import ModelConfig

STAGE1_CONFIG = ModelConfig(
    name="dd-default-v1",
    sample_rate=44100,
    sample_size=32768,
    channels=2,
    depth=9,
    c_mults=(8, 16, 16, 32, 32, 64, 64, 128, 128),
    n_attn_layers=1,
    categories=tuple(synth.CATEGORIES),
    sampler="dpmpp-2m-sde",
    steps=30,
    fade_out_ms=50.0,  # models/synth.py ends every sound with a 50 ms fade
    license="MIT",
    notes=(
        "trained by dd-companion on its own synthesized one-shots (models/synth.py, seed 0): kick, snare, "
        "clap, hats, toms, percussion, bass, synth and fx; 44.1 kHz stereo, 0.74 s"
    ),
)

# What stage 2 recommends was measured on its final weights (benchmarks/quality.py, twelve per category,
# dpmpp-2m-sde x 30; docs/default-model.md): guidance 2 everywhere is the only setting measured that
# names at least 90% of the sounds right. The first release of stage 2 (4,000 steps, "dd-default-v2") was
# measured the same way; "dd-default-v3" is the same network trained to step 7,600.
STAGE2_CONFIG = replace(
    STAGE1_CONFIG,
    name="dd-default-v3",
    level_cond=True,
    guidance=2.0,
    notes=(
        "trained by dd-companion on its own synthesized one-shots (models/synth.py): kick, snare, clap, hats, "
        "toms, percussion, bass, synth and fx; 44.1 kHz stereo, 0.74 s; per-level conditioning, guided x2"
    ),
)

# Stage 3 distils stage 2's guidance into the network: one call per sampler step instead of two.
DEFAULT_CONFIG = replace(
    STAGE2_CONFIG,
    name="dd-default-v4",
    guidance=1.0,
    # measured after training (benchmarks/quality.py, twelve per category; docs/default-model.md): with the
    # karras ramp starting at sigma_k 10 instead of the companion's 200, 20 steps gave accuracy 92%, Frechet
    # 129.7 and diversity 40%, against 94% / 143.0 / 39% for the 30 steps from 200 recommended before (30 steps
    # from 10: 92% / 125.6 / 42%; 15 steps: 7.4x the floor; sigma_max 5: accuracy 83%); and with rho 12 instead
    # of 7 (more of the steps at low noise) the same 20 steps gave 93% / 114.5 / 41% (rho 4: 214.2; rho 20: 90% /
    # 109.7 / 40%, accuracy at the edge)
    steps=20,
    sigma_max=10.0,
    rho=12.0,
    # the tail gate (models/finish.py): the synthesizer's sounds end in digital silence, the network leaves a floor
    # 45-70 dB under the peak in the tails of kicks, hats and percussion (mostly rumble under 150 Hz). At -40 dB the
    # gate takes it out; on the synthesizer's own sounds what it takes is 45-70 dB under them. Measured with the
    # sampling above (benchmarks/quality.py, twelve per category): 93% / Frechet 105.1 / diversity 46% against 93% /
    # 114.5 / 41% without. The same sounds gated after the finish stage: -45 dB gave 107.1 / 45%, -35 dB 99.8 / 49%
    # but accuracy 90%, at the edge; -40 dB 104.5 / 46%
    tail_gate_db=-40.0,
    # the band limits per category (models/finish.py low_cut_of, high_cut_of): what the stage-3 run measures on its
    # data (synth seed 2, 256 sounds per category; tests/test_default_model.py checks it). Under hats, claps and
    # snares the network leaves a rumble 13-23 dB above anything in the data below 150 Hz, over basses a hiss 30
    # dB above it over 8 kHz. With the low cut alone the same sampling gave 93% / Frechet 90.6 (3.9x the floor) /
    # diversity 45% against 93% / 105.1 (4.6x) / 46% without; with the high cut too 96% / 89.9 (3.9x) / 45%.
    # Measured on the data weighted by the DC filter (an offset under an envelope is not low end): before that,
    # the synth's offsets held its low cut at 0 and its sounds kept a rumble 20 dB under them below 40 Hz; at 81
    # Hz it lies 34-42 dB under (kick, bass, tom, perc and fx moved to 15-36 Hz). 96% / 89.0 (3.86x) / 45%
    low_cut_hz=(21.0, 28.0, 167.0, 849.0, 756.0, 22.0, 36.0, 15.0, 81.0, 16.0),
    high_cut_hz=(19589.0, 0.0, 0.0, 0.0, 0.0, 17567.0, 0.0, 7037.0, 0.0, 0.0),
    # the onset fades per category (models/finish.py fade_in_of), measured likewise: the synthesizer's synths take at
    # least 0.45 ms (20 samples) to reach half their peak, every other category may start at it. The network started
    # its synths at 63% of their peak (median; up to 96%) in the first sample, a click when played
    fade_in_ms=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.45, 0.0),
    notes=(
        "trained by dd-companion on its own synthesized one-shots (models/synth.py): kick, snare, clap, hats, "
        "toms, percussion, bass, synth and fx; 44.1 kHz stereo, 0.74 s; per-level conditioning; guidance x2 "
        "distilled into the network (one call per step)"
    ),
)

DEFAULT_EXPORT = "models/default/dd-default.safetensors"
STAGE1_RUN_DIR = "runs/default"
STAGE1_EXPORT = "runs/default/dd-default-v1.safetensors"
STAGE2_RUN_DIR = "runs/default-v2"
STAGE2_EXPORT = "runs/default-v2/dd-default-v3.safetensors"
DEFAULT_RUN_DIR = "runs/default-v4"

# Keyword arguments of models.train.TrainOptions (kept as a plain dict so this module needs no torch).
STAGE1_RECIPE: dict[str, Any] = {
    "steps": 7_554,
    "lr_drops": ((3_697, 1.5e-4), (6_461, 5e-5)),
    "max_minutes": 100.0,
    "batch_size": 8,
    "accum": 1,
    "lr": 3e-4,
    "lr_warmup": 200,
    "ema_decay": 0.995,
    "ema_warmup": 200,
    "grad_clip": 1.0,
    "seed": 0,
    "checkpoint_every": "5m",
    "export_every": "10m",
    "demo_every": "15m",
    "demo_steps": 50,
    # one thread: on the shared two-core build machine a two-thread step waited on a descheduled
    # partner and ran 3x slower (measured 4.4 s vs 12-16 s per step at batch 8); use --threads 2 on an
    # otherwise idle machine
    "threads": 1,
}

# Stage 2: stage 1's EMA weights, given per-level conditioning (zero-initialised, see models/network.py),
# trained on fresh sounds (synth seed 1: a stream stage 1 never saw) with 15% of the items unlabelled (the
# usual 10-20% for classifier-free guidance). lr 1e-4 after a 100-step warm-up: twice stage 1's last lr, so
# the new maps (Adam moves each weight by about lr per step) learn within the budget, then 5e-5 and 2e-5 for
# the EMA to settle: 4,000 steps, about 100 minutes at 0.66 steps/s with two threads on the idle 2-core
# machine (released as dd-default-v2). Then a second cycle, added after measuring the first: back to 5e-5
# from step 4,000 and 2e-5 from 6,500, to step 7,600 (about 70 more minutes at 0.82 steps/s; dd-default-v3).
# A resumed run follows the recipe as written here, so a run stopped at 4,000 continues into the second cycle.
STAGE2_RECIPE: dict[str, Any] = {
    "steps": 7_600,
    "lr": 1e-4,
    "lr_warmup": 100,
    "lr_drops": ((2_500, 5e-5), (3_400, 2e-5), (4_000, 5e-5), (6_500, 2e-5)),
    "label_dropout": 0.15,
    "max_minutes": 105.0,
    "batch_size": 8,
    "accum": 1,
    "ema_decay": 0.995,
    "ema_warmup": 100,
    "grad_clip": 1.0,
    "seed": 1,
    "checkpoint_every": "5m",
    "export_every": "10m",
    "demo_every": "0",
    "demo_steps": 50,
    "threads": 2,
}

# Stage 3: guidance distillation (models/train.py, distill_guidance). Stage 2's exported weights are both the
# start and the frozen teacher; the student learns uncond + 2 (cond - uncond) for labelled items and keeps
# the unconditional prediction for the 15% left unlabelled, on a synth stream neither stage saw (seed 2).
# lr 5e-5 (stage 2's middle value; the student starts next to its target) after a 50-step warm-up, then 2e-5
# for the last 400 steps so the EMA settles: 2,000 steps, 88 minutes at 0.41-0.47 steps/s with two threads
# (a distillation step also runs the teacher on twice the batch). Measured (benchmarks/quality.py, twelve per
# category, dpmpp-2m-sde x 30): the student names 94% of its sounds right at one call a step, against its
# teacher's 92% at two (Frechet 143.0 against 148.8, diversity 39% for both); the loss fell from about
# 0.0015 to 0.0006 after the drop to 2e-5.
DEFAULT_RECIPE: dict[str, Any] = {
    "steps": 2_000,
    "lr": 5e-5,
    "lr_warmup": 50,
    "lr_drops": ((1_600, 2e-5),),
    "distill_guidance": 2.0,
    "label_dropout": 0.15,
    "max_minutes": 85.0,
    "batch_size": 8,
    "accum": 1,
    "ema_decay": 0.995,
    "ema_warmup": 100,
    "grad_clip": 1.0,
    "seed": 2,
    "checkpoint_every": "5m",
    "export_every": "10m",
    "demo_every": "0",
    "demo_steps": 50,
    "threads": 2,
}
