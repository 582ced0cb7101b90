"""Schedules and samplers, checked against the closed-form Gaussian case.

For data x0 ~ N(mu, s^2) elementwise the exact v-denoiser is known, and the probability-flow ODE maps a
latent x_t to x0 = mu + s (x_t - alpha mu) / sqrt(alpha^2 s^2 + sigma^2): in one dimension the flow is the
monotone map between the Gaussian marginals. From pure noise (t' = 1) that is x0 = mu + s * x_T.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from models.errors import ConfigError, DDError
from models.samplers import (
    DEFAULT_SAMPLER,
    SAMPLERS,
    Cancelled,
    gaussian_denoiser,
    gaussian_flow_x0,
    get_sampler,
    invert,
    noise_to,
    sample,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_v_ddim,
    sample_v_iplms,
    slerp,
)
from models.schedules import (
    KARRAS_RHO,
    KARRAS_SIGMA_MAX,
    KARRAS_SIGMA_MIN,
    SCHEDULES,
    alpha_sigma,
    crash_t,
    ksigma_to_t,
    make_schedule,
    t_to_ksigma,
)

C, L = 2, 64
MU = 0.3 * np.sin(np.arange(C * L).reshape(C, L) * 0.1)  # a different mean and scale per element
S = np.geomspace(0.03, 1.0, C * L).reshape(C, L)
DETERMINISTIC = [name for name, info in SAMPLERS.items() if not info.stochastic]


def rngs_for(seeds):
    return [np.random.default_rng(seed) for seed in seeds]


def noise(batch, seed=0, shape=(C, L)):
    return np.random.default_rng(seed).standard_normal((batch, *shape))


def rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


# --- schedules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("t_start", [1.0, 0.5, 0.05])
@pytest.mark.parametrize("steps", [1, 2, 10, 250])
def test_schedule_shape_endpoints_and_monotone(name, t_start, steps):
    ts = make_schedule(name, steps, t_start)
    assert ts.dtype == np.float64 and ts.shape == (steps + 1,)
    assert ts[0] == t_start and ts[-1] == 0.0
    assert np.all(np.diff(ts) < 0)


def test_crash_schedule_is_dance_diffusions():
    # Re-derived from the sample-generator / diffusers formula: sigma = sin^2(pi u/2), alpha = sqrt(1 - sigma^2).
    u = np.linspace(1, 0, 21)
    sigma = np.sin(u * np.pi / 2) ** 2
    expected = np.arctan2(sigma, np.sqrt(1 - sigma**2)) * 2 / np.pi
    np.testing.assert_allclose(make_schedule("crash", 20), expected, atol=1e-15)
    # From t_start < 1 the u values stay evenly spaced and start where crash(u) = t_start.
    ts = make_schedule("crash", 10, 0.3)
    u = 2 / np.pi * np.arcsin(np.sqrt(np.sin(ts * np.pi / 2)))
    np.testing.assert_allclose(np.diff(u), np.full(10, -u[0] / 10), atol=1e-12)
    np.testing.assert_allclose(crash_t(u[0]), 0.3, atol=1e-12)


def test_cosine_schedule_is_linear_in_t():
    np.testing.assert_allclose(make_schedule("cosine", 4, 0.8), [0.8, 0.6, 0.4, 0.2, 0.0], atol=1e-15)


@pytest.mark.parametrize("t_start", [1.0, 0.5])
def test_karras_schedule_is_rho_spaced_in_k_sigma(t_start):
    ts = make_schedule("karras", 12, t_start)
    ramp = t_to_ksigma(ts[:-1]) ** (1 / KARRAS_RHO)
    if t_start == 1.0:
        assert np.isinf(ramp[0])  # pure noise first, then the capped ramp
        ramp = ramp[1:]
    else:
        np.testing.assert_allclose(ramp[0] ** KARRAS_RHO, 1.0)  # tan(pi/4): sigma_max follows t_start
    steps = np.diff(ramp)
    np.testing.assert_allclose(steps, np.full_like(steps, steps[0]), rtol=1e-9)
    np.testing.assert_allclose(ramp[-1] ** KARRAS_RHO, KARRAS_SIGMA_MIN, rtol=1e-9)


def test_karras_sigma_max_moves_the_ramp_and_the_first_step_still_starts_from_pure_noise():
    def top(ts):  # the ramp's first point, sigma_max (the step from pure noise replaces it), extrapolated
        ramp = t_to_ksigma(ts[1:-1]) ** (1 / KARRAS_RHO)
        np.testing.assert_allclose(np.diff(ramp), np.full(len(ramp) - 1, np.diff(ramp)[0]), rtol=1e-9)
        return (2 * ramp[0] - ramp[1]) ** KARRAS_RHO

    default = make_schedule("karras", 12)
    low = make_schedule("karras", 12, sigma_max=10.0)
    assert default[0] == low[0] == 1.0
    assert top(default) == pytest.approx(KARRAS_SIGMA_MAX) and top(low) == pytest.approx(10.0)
    assert np.all(low[1:-2] < default[1:-2]) and low[-2] == default[-2]  # the same steps, spent lower down
    half = make_schedule("karras", 12, 0.5, sigma_max=10.0)  # a start below the cap keeps its own level
    np.testing.assert_array_equal(half, make_schedule("karras", 12, 0.5))
    np.testing.assert_array_equal(make_schedule("crash", 12, sigma_max=10.0), make_schedule("crash", 12))
    for bad in (0.5, 2000.0, float("nan"), True, "10"):
        with pytest.raises(ConfigError, match=r"sigma_max must be a number in 1\.\.1000"):
            make_schedule("karras", 12, sigma_max=bad)


def test_karras_rho_sets_the_spacing_and_is_checked():
    for rho in (4.0, 12.0):
        ts = make_schedule("karras", 12, sigma_max=10.0, rho=rho)
        ramp = t_to_ksigma(ts[1:-1]) ** (1 / rho)  # evenly spaced in sigma_k^(1/rho)
        np.testing.assert_allclose(np.diff(ramp), np.full(len(ramp) - 1, np.diff(ramp)[0]), rtol=1e-9)
    low, high = make_schedule("karras", 12, sigma_max=10.0, rho=4.0), make_schedule("karras", 12, sigma_max=10.0,
                                                                                    rho=12.0)
    assert np.all(high[2:-2] < low[2:-2])  # a higher rho spends more of the steps at low noise
    np.testing.assert_array_equal(make_schedule("karras", 12, rho=KARRAS_RHO), make_schedule("karras", 12))
    np.testing.assert_array_equal(make_schedule("cosine", 12, rho=12.0), make_schedule("cosine", 12))
    for bad in (0.5, 51.0, float("inf"), False, "7"):
        with pytest.raises(ConfigError, match=r"rho must be a number in 1\.\.50"):
            make_schedule("karras", 12, rho=bad)


def test_time_conversions_round_trip():
    t = np.linspace(0, 1, 11)
    alpha, sigma = alpha_sigma(t)
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0)
    np.testing.assert_allclose(ksigma_to_t(t_to_ksigma(t)), t, atol=1e-12)
    assert np.isinf(t_to_ksigma(1.0)) and ksigma_to_t(np.inf) == 1.0 and t_to_ksigma(0.0) == 0.0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("linear", 10), "'linear'"),
        (("crash", 0), "steps"),
        (("crash", 2.5), "steps"),
        (("crash", True), "steps"),
        (("crash", 10, 0.0), "t_start"),
        (("crash", 10, 1.5), "t_start"),
        (("crash", 10, float("nan")), "t_start"),
    ],
)
def test_schedule_errors_name_the_value(args, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        make_schedule(*args)
    if needle == "'linear'":
        assert all(name in str(info.value) for name in SCHEDULES)


# --- the analytic reference itself --------------------------------------------------------------------


def test_gaussian_denoiser_is_the_least_squares_predictor():
    rng = np.random.default_rng(1)
    x0 = 0.2 + 0.4 * rng.standard_normal((4000, 1, 8))
    eps = rng.standard_normal(x0.shape)
    t = np.full(len(x0), 0.4)
    alpha, sigma = alpha_sigma(0.4)
    x_t = alpha * x0 + sigma * eps
    v_hat = gaussian_denoiser(0.2, 0.4)(x_t.astype(np.float32), t.astype(np.float32))
    residual = alpha * eps - sigma * x0 - v_hat
    # The conditional mean leaves a residual orthogonal to every function of x_t, here 1 and x_t.
    assert abs(residual.mean()) < 0.01 and abs((residual * x_t).mean()) < 0.01
    assert np.mean(residual**2) < np.mean((residual + 0.05 * x_t) ** 2)


# --- convergence on the Gaussian case -----------------------------------------------------------------


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("schedule", ["crash", "default"])
def test_deterministic_samplers_reach_the_exact_flow_solution(name, schedule):
    info = SAMPLERS[name]
    schedule = info.default_schedule if schedule == "default" else schedule
    x = noise(2)
    exact = gaussian_flow_x0(x, 1.0, MU, S)
    denoise = gaussian_denoiser(MU, S)
    errors = [
        rms(info.fn(denoise, x, make_schedule(schedule, n), rngs_for([0, 1])), exact) for n in (20, 80, 160)
    ]
    assert errors[1] < errors[0] / 3, errors
    tolerance = {"v-ddim": 1e-2, "v-iplms": 2e-3, "dpmpp-2m": 1e-3}[name]
    assert errors[2] < tolerance, errors


def test_dpmpp_2m_is_second_order():
    x = noise(2)
    exact = gaussian_flow_x0(x, 1.0, MU, S)
    denoise = gaussian_denoiser(MU, S)
    err = [
        rms(sample_dpmpp_2m(denoise, x, make_schedule("crash", n), rngs_for([0, 1])), exact)
        for n in (40, 160)
    ]
    assert err[1] < err[0] / 8, err  # 4x the steps: 16x less error at second order, 4x at first


def test_v_iplms_is_high_order_on_zero_mean_data():
    # With a zero data mean the t'=1 quirk below costs nothing and the fourth-order multistep shows.
    x = noise(2)
    exact = gaussian_flow_x0(x, 1.0, 0.0, S)
    denoise = gaussian_denoiser(0.0, S)
    err = [
        rms(sample_v_iplms(denoise, x, make_schedule("crash", n), rngs_for([0, 1])), exact) for n in (20, 80)
    ]
    assert err[1] < err[0] / 10, err


def test_v_iplms_first_step_from_pure_noise_ignores_the_mean_like_diffusers():
    ts = make_schedule("crash", 5)
    seen = []

    def denoise(x, t):
        seen.append(x.copy())
        return np.full_like(x, 0.7)  # a network predicting x0 = -v = -0.7 at t'=1

    x = noise(1).astype(np.float32)
    sample_v_iplms(denoise, x, ts, rngs_for([0]))
    _, sigma1 = alpha_sigma(ts[1])
    np.testing.assert_allclose(seen[1], sigma1 * x, rtol=1e-6)  # alpha_1 * 0 + sigma_1 * eps, eps = x at t'=1


# Ancestral DDIM (eta = 1) under-disperses by O(1/N) on non-unit data (std 0.472 at 50 steps, 0.489 at 200,
# by exact variance propagation), so it gets more steps.
@pytest.mark.parametrize(
    ("name", "options", "steps"), [(n, {}, 50) for n in SAMPLERS] + [("v-ddim", {"eta": 1.0}, 200)]
)
def test_output_distribution_matches_the_data(name, options, steps):
    mu, s = 0.3, 0.5
    x = noise(4, seed=3, shape=(C, 2048))
    out = sample(
        name,
        gaussian_denoiser(mu, s),
        x,
        make_schedule(SAMPLERS[name].default_schedule, steps),
        rngs_for(range(4)),
        **options,
    )
    assert out.dtype == np.float32 and out.shape == x.shape
    assert abs(out.mean() - mu) < 0.02 and abs(out.std() - s) < 0.02, (out.mean(), out.std())


def test_sde_sampler_without_noise_is_dpmpp_2m():
    x, ts, denoise = noise(2), make_schedule("karras", 12), gaussian_denoiser(MU, S)
    plain = sample_dpmpp_2m(denoise, x, ts, rngs_for([0, 1]))
    np.testing.assert_allclose(
        sample_dpmpp_2m_sde(denoise, x, ts, rngs_for([0, 1]), eta=0.0), plain, atol=1e-6
    )
    assert rms(sample_dpmpp_2m_sde(denoise, x, ts, rngs_for([0, 1])), plain) > 0.05


# --- per-item randomness, callbacks, cancellation -----------------------------------------------------


@pytest.mark.parametrize(("name", "options"), [("dpmpp-2m-sde", {}), ("v-ddim", {"eta": 0.7})])
def test_same_seed_same_audio_whatever_the_batch(name, options):
    seeds = [11, 22, 33]
    x = noise(3, seed=5)
    ts = make_schedule("karras", 15)
    denoise = gaussian_denoiser(MU, S)
    batched = sample(name, denoise, x, ts, rngs_for(seeds), **options)
    for i, seed in enumerate(seeds):
        alone = sample(name, denoise, x[i : i + 1], ts, rngs_for([seed]), **options)
        np.testing.assert_allclose(batched[i : i + 1], alone, rtol=0, atol=1e-6)
    other = sample(name, denoise, x, ts, rngs_for([44, 22, 33]), **options)
    assert rms(other[0], batched[0]) > 0.01  # the item's own generator really drives its noise
    np.testing.assert_array_equal(other[1:], batched[1:])


@pytest.mark.parametrize("name", SAMPLERS)
def test_exactly_n_evaluations_and_n_callbacks(name):
    calls, progress = [], []

    def denoise(x, t):
        calls.append(t.copy())
        assert x.dtype == np.float32 and t.dtype == np.float32 and t.shape == (x.shape[0],)
        return gaussian_denoiser(MU, S)(x, t)

    ts = make_schedule("crash", 7)
    sample(name, denoise, noise(2), ts, rngs_for([0, 1]), callback=lambda i, n: progress.append((i, n)))
    assert len(calls) == 7 and progress == [(i, 7) for i in range(7)]
    np.testing.assert_allclose([c[0] for c in calls], ts[:-1], atol=1e-7)  # evaluated at t_0 .. t_{N-1}


@pytest.mark.parametrize("name", SAMPLERS)
def test_cancel_raises_before_the_next_evaluation(name):
    calls, polls = [], []

    def denoise(x, t):
        calls.append(1)
        return np.zeros_like(x)

    def cancel():
        polls.append(1)
        return len(polls) >= 3

    with pytest.raises(Cancelled, match="step 3 of 10") as info:
        sample(name, denoise, noise(1), make_schedule("crash", 10), rngs_for([0]), cancel=cancel)
    assert len(calls) == 2 and isinstance(info.value, DDError) and info.value.code == "cancelled"


def test_invert_counts_and_cancels():
    progress = []
    ts = make_schedule("crash", 5)[::-1].copy()
    invert(gaussian_denoiser(MU, S), noise(1), ts, callback=lambda i, n: progress.append((i, n)))
    assert progress == [(i, 5) for i in range(5)]
    with pytest.raises(Cancelled):
        invert(gaussian_denoiser(MU, S), noise(1), ts, cancel=lambda: True)


# --- inversion, interpolation, noising ----------------------------------------------------------------


def test_invert_then_sample_round_trips():
    denoise = gaussian_denoiser(MU, S)
    x0 = (MU + S * noise(2, seed=9)).astype(np.float32)
    errors = []
    for steps in (100, 200):
        ts = make_schedule("crash", steps)
        latent = invert(denoise, x0, ts[::-1].copy())
        back = sample_v_ddim(denoise, latent, ts, rngs_for([0, 1]))
        errors.append((rms(latent, (x0 - MU) / S), rms(back, x0)))
    assert errors[0][0] < 0.05 and errors[0][1] < 0.03, errors  # at t'=1 the exact latent is (x0 - mu) / s
    assert errors[1][0] < errors[0][0] / 1.6 and errors[1][1] < errors[0][1] / 1.6, errors


def test_invert_to_an_intermediate_time():
    denoise = gaussian_denoiser(MU, S)
    x0 = (MU + S * noise(1, seed=2)).astype(np.float32)
    latent = invert(denoise, x0, np.linspace(0.0, 0.5, 201))
    back = gaussian_flow_x0(latent, 0.5, MU, S)
    assert rms(back, x0) < 0.01


def test_slerp_endpoints_great_circle_and_weights():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, 1, 2, 4096))
    np.testing.assert_allclose(slerp(a, b, 0.0), a, atol=1e-5)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, atol=1e-5)
    # Two orthonormal channels: the midpoint is (a + b)/sqrt(2) and every weight keeps unit norm.
    e1, e2 = np.zeros((1, 1, 4)), np.zeros((1, 1, 4))
    e1[..., 0], e2[..., 1] = 1.0, 1.0
    np.testing.assert_allclose(slerp(e1, e2, 0.5), (e1 + e2) / np.sqrt(2), atol=1e-7)
    many = slerp(e1, e2, np.array([0.0, 0.25, 13 / 12]))
    assert many.shape == (3, 1, 4)
    np.testing.assert_allclose(np.linalg.norm(many, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        many[2, 0, :2], [np.cos(13 / 12 * np.pi / 2), np.sin(13 / 12 * np.pi / 2)], atol=1e-6
    )


def test_slerp_works_per_channel_and_falls_back_to_a_line():
    a = np.array([[[1.0, 0.0], [1.0, 0.0]]])
    b = np.array([[[0.0, 1.0], [2.0, 0.0]]])  # channel 0 orthogonal, channel 1 parallel
    out = slerp(a, b, 0.5)
    np.testing.assert_allclose(out[0, 0], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [1.5, 0.0], atol=1e-6)


def test_slerp_rejects_bad_shapes():
    with pytest.raises(ConfigError, match="shapes"):
        slerp(np.zeros((2, 2, 8)), np.zeros((3, 2, 8)), 0.5)
    with pytest.raises(ConfigError, match="batch, channels, length"):
        slerp(np.zeros((2, 8)), np.zeros((2, 8)), 0.5)


def test_noise_to():
    x0, eps = noise(2, seed=1), noise(2, seed=2)
    np.testing.assert_allclose(noise_to(x0, 0.0, eps), x0, atol=1e-6)
    np.testing.assert_allclose(noise_to(x0, 1.0, eps), eps, atol=1e-6)
    mixed = noise_to(x0, np.array([0.0, 0.5]), eps)
    np.testing.assert_allclose(mixed[1], np.sqrt(0.5) * (x0[1] + eps[1]), atol=1e-6)
    with pytest.raises(ConfigError, match="t must"):
        noise_to(x0, 1.5, eps)
    with pytest.raises(ConfigError, match="t must"):
        noise_to(x0, np.array([0.1, 0.2, 0.3]), eps)


# --- the table and input checks -----------------------------------------------------------------------


def test_table_defaults_are_valid():
    assert DEFAULT_SAMPLER in SAMPLERS
    assert [n for n, i in SAMPLERS.items() if i.stochastic] == ["dpmpp-2m-sde"]
    for name, info in SAMPLERS.items():
        assert info.default_schedule in SCHEDULES and 1 <= info.default_steps <= 1000, name
        assert info.fn.__doc__ and "20" in info.fn.__doc__.splitlines()[0], name  # names a paper and year


def test_get_sampler_lists_the_names():
    assert get_sampler("dpmpp-2m").fn is sample_dpmpp_2m
    with pytest.raises(ConfigError, match="'euler'") as info:
        get_sampler("euler")
    assert all(name in str(info.value) for name in SAMPLERS)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda d, x, r: sample("v-ddim", d, x, make_schedule("crash", 4), r, eta=1.5), "eta must be in"),
        (lambda d, x, r: sample("dpmpp-2m", d, x, make_schedule("crash", 4), r, eta=0.5), "no option eta"),
        (lambda d, x, r: sample("v-iplms", d, x, make_schedule("crash", 4)[::-1], r), "strictly descending"),
        (lambda d, x, r: sample("v-iplms", d, x, np.array([1.0, 0.5]), r), "end at exactly 0"),
        (lambda d, x, r: sample("v-iplms", d, x, np.array([1.5, 0.0]), r), "within"),
        (lambda d, x, r: sample("v-iplms", d, x, np.array([0.0]), r), "at least 2"),
        (
            lambda d, x, r: sample("v-iplms", d, x, make_schedule("crash", 4), r[:1]),
            "one generator per batch item",
        ),
        (lambda d, x, r: sample("v-iplms", d, x[0], make_schedule("crash", 4), r), "shape"),
        (
            lambda d, x, r: sample("v-iplms", lambda x, t: x[:, :1], x, make_schedule("crash", 4), r),
            "denoiser",
        ),
        (lambda d, x, r: invert(d, x, make_schedule("crash", 4)), "ascending"),
    ],
)
def test_bad_inputs_raise_config_errors(call, needle):
    with pytest.raises(ConfigError, match=needle):
        call(gaussian_denoiser(MU, S), noise(2), rngs_for([0, 1]))


def test_sampler_modules_do_not_import_torch():
    code = "import sys, models.samplers, models.schedules; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_v_ddim_eta_one_adds_the_ddpm_posterior_noise():
    # From x = 0 with a zero network both estimates vanish, so one step leaves only the injected noise, whose
    # variance must be DDPM's posterior variance sigma_b^2 (1 - alpha_a^2 / alpha_b^2) / sigma_a^2.
    ts = np.array([0.5, 0.3, 0.0])
    (alpha_a, alpha_b), (sigma_a, sigma_b) = alpha_sigma(ts[:2])
    expected = sigma_b**2 * (1 - alpha_a**2 / alpha_b**2) / sigma_a**2
    states = []

    def denoise(x, t):
        states.append(x.astype(np.float64))
        return np.zeros_like(x)

    sample_v_ddim(denoise, np.zeros((4, C, 4096)), ts, rngs_for(range(4)), eta=1.0)
    assert abs(states[1].var() / expected - 1) < 0.03, (states[1].var(), expected)
