"""DPM++ SDE against diffusers' DPMSolverSDEScheduler, its Brownian-tree noise included. minidiff draws the tree's
seed from the run's generator, torch.randint(0, 2**63 - 1, ()) (one per sample from a list of generators); diffusers
is given the same seed as its noise_sampler_seed, so the stochastic runs are compared exactly.

Here: the interleaved timesteps and midpoint σ's for every spacing and σ re-spacing at 1 to 50 steps; the latent
after every call at 1 to 50 steps in float64, float32 and float16; Karras, exponential and Beta σ's; v-prediction;
img2img starts and inpainting from one; lists of generators, torch's global generator, a fixed noise_sampler_seed;
s_noise; the capped ancestral split; prediction_type "sample", which diffusers lacks. The shared matrix
(tests/test_samplers.py) runs it on every timestep spacing and prediction type at 7 and 25 steps too.
"""

import inspect
import itertools
import subprocess
import sys
import warnings

import diffusers
import pytest
import torch
from test_sampler_dpm2 import assert_same_beta_trajectory
from test_samplers import SPACINGS, assert_same_trajectory, config_dict, rel_err, stand_in_model

from minidiff.samplers import SchedulerConfig, make_sampler
from minidiff.samplers.dpmpp_sde import brownian_seed
from minidiff.samplers.steps import get_ancestral_step

ONE_THREAD = True  # tiny tensors (tests/conftest.py)
STEPS = (1, 2, 7, 25, 50)
SIGMA_SPACINGS = (None, "karras", "exponential", "beta")


@pytest.fixture(autouse=True)
def quiet_torchsde():
    """torchsde warns when a query falls outside [t0, t1] (and clamps it), as the last midpoint's query does."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Should have", category=UserWarning)
        yield


def sde_config(spacing="linspace", prediction_type="epsilon", sigmas=None, **overrides):
    """A complete config; sigmas: None or a σ re-spacing, set as the use_*_sigmas flag a model's file carries."""
    flags = {f"use_{name}_sigmas": name == sigmas for name in ("karras", "exponential", "beta")}
    return {**config_dict(spacing, prediction_type), **flags, **overrides}


def start(batch=2, dtype=torch.float64):
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(1234), dtype=dtype)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def run_diffusers(d, steps, x, seed=None, s_noise=1.0):
    """diffusers' loop from pure noise x; returns the latent after every call and each step's σ_mid."""
    scheduler = diffusers.DPMSolverSDEScheduler.from_config(d)
    scheduler.set_timesteps(steps)
    if seed is not None:  # else the config's, or (None) one drawn from torch's global generator
        scheduler.noise_sampler_seed = seed
    x, latents, midpoints = x * scheduler.init_noise_sigma, [], []
    for t in scheduler.timesteps:
        x = scheduler.step(stand_in_model(scheduler.scale_model_input(x, t), t), t, x, s_noise=s_noise).prev_sample
        latents.append(x)
        midpoints += [scheduler.mid_point_sigma] if scheduler.mid_point_sigma is not None else []
    return latents, midpoints


def run_minidiff(d, steps, x, generator, s_noise=1.0):
    sampler = make_sampler("dpmpp_sde", SchedulerConfig.from_dict(d), steps)
    latents = []
    sampler.sample(stand_in_model, x * sampler.init_noise_sigma, generator, lambda i, t, x, x0: latents.append(x),
                   s_noise=s_noise)
    return latents


def assert_same_latents(ours, ref, tolerance=1e-6):
    assert len(ours) == len(ref) > 0
    assert all(rel_err(a, b) <= tolerance for a, b in zip(ours, ref))  # NaN fails too


@pytest.mark.parametrize("spacing, sigmas", itertools.product(SPACINGS, SIGMA_SPACINGS))
def test_interleaved_timesteps_and_midpoint_sigmas_equal_diffusers(spacing, sigmas):
    """diffusers lists t_0, t_mid_0, t_1, ..., t_{n-1} in float64 and every σ after the first twice; the σ_mid its
    steps compute (mid_point_sigma) are the plan's call σ's at the midpoint calls, bit for bit."""
    d = sde_config(spacing, sigmas=sigmas)
    for steps in STEPS:
        ref = diffusers.DPMSolverSDEScheduler.from_config(d)
        ref.set_timesteps(steps)
        sampler = make_sampler("dpmpp_sde", SchedulerConfig.from_dict(d), steps)
        assert sampler.timesteps.dtype == ref.timesteps.dtype == torch.float64
        assert len(sampler.timesteps) == 2 * steps - 1
        if sigmas == "beta":  # minidiff's Beta quantiles differ from scipy's in the last bits of the float64 σ's
            torch.testing.assert_close(sampler.timesteps, ref.timesteps, rtol=0, atol=1e-9)
        else:
            assert torch.equal(sampler.timesteps, ref.timesteps), steps
        assert torch.equal(sampler.all_sigmas, torch.cat([ref.sigmas[:1], ref.sigmas[1::2]])), steps
        assert sampler.init_noise_sigma == float(ref.init_noise_sigma)
        assert torch.equal(sampler.call_sigmas[::2], sampler.all_sigmas[:-1])
        _, midpoints = run_diffusers(d, steps, start(1, torch.float32), seed=0)
        assert len(midpoints) == steps - 1
        if midpoints:
            assert torch.equal(sampler.call_sigmas[1::2], torch.stack(midpoints)), steps


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_latent_after_every_call_equals_diffusers(steps, dtype):
    for i, prediction_type in enumerate(("epsilon", "v_prediction")):
        assert_same_trajectory("dpmpp_sde", sde_config(SPACINGS[(i + steps) % 3], prediction_type), steps, dtype)


@pytest.mark.parametrize("sigmas", ["karras", "exponential", "beta"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_every_sigma_spacing_matches_diffusers(sigmas, prediction_type):
    d = sde_config("trailing", prediction_type, sigmas)
    for steps, dtype in [(7, torch.float64), (25, torch.float32), (10, torch.float16), (50, torch.float64)]:
        if sigmas == "beta":
            assert_same_beta_trajectory("dpmpp_sde", d, steps, dtype)
        else:
            assert_same_trajectory("dpmpp_sde", d, steps, dtype)


@pytest.mark.parametrize("strength", [0.3, 0.6, 0.99])
@pytest.mark.parametrize("sigmas", [None, "karras"])
def test_img2img_starts_match_diffusers(strength, sigmas):
    """A late start skips whole steps (two calls each); the tree still spans the whole schedule's σ's."""
    d = sde_config("leading", "v_prediction", sigmas)
    for steps, dtype in [(7, torch.float64), (25, torch.float32), (10, torch.float16)]:
        assert_same_trajectory("dpmpp_sde", d, steps, dtype, strength=strength)
    assert_same_trajectory("dpmpp_sde", d, 10, strength=strength, masked=True)  # inpainting from a late start


def test_a_list_of_generators_gives_each_sample_its_own_path_as_a_list_of_seeds_does_in_diffusers():
    d = sde_config("trailing", "v_prediction", "karras")
    x = start()
    seeds = [int(torch.randint(0, 2**63 - 1, (), generator=generator(s))) for s in (10, 11)]  # the documented rule
    assert brownian_seed([generator(10), generator(11)]) == seeds
    ours = run_minidiff(d, 12, x, [generator(10), generator(11)])
    assert_same_latents(ours, run_diffusers(d, 12, x, seed=seeds)[0])
    alone = run_minidiff(d, 12, x[1:], [generator(11)])  # the second picture depends on its own generator only
    assert torch.equal(alone[-1][0], ours[-1][1])
    with pytest.raises(ValueError, match="got a list of 3 generators for a batch of 2; pass one generator per"):
        run_minidiff(d, 12, x, [generator(s) for s in range(3)])


def test_one_generator_draws_one_seed_for_the_whole_batch():
    d = sde_config("linspace")
    x = start()
    seed = int(torch.randint(0, 2**63 - 1, (), generator=generator(5)))
    assert brownian_seed(generator(5)) == seed
    assert_same_latents(run_minidiff(d, 9, x, generator(5)), run_diffusers(d, 9, x, seed=seed)[0])


def test_without_a_generator_the_seed_comes_from_torchs_global_generator_as_in_diffusers():
    d, x = sde_config("trailing", "v_prediction"), start()
    torch.manual_seed(7)
    ref, _ = run_diffusers(d, 9, x)  # noise_sampler_seed None: diffusers draws one from the global generator
    torch.manual_seed(7)
    assert_same_latents(run_minidiff(d, 9, x, None), ref)


def test_a_seeded_run_is_reproducible_and_the_seed_matters():
    d, x = sde_config(), start()
    first, again, other = (run_minidiff(d, 9, x, generator(seed))[-1] for seed in (0, 0, 1))
    assert torch.equal(first, again)
    assert rel_err(first, other) > 1e-3


def test_a_noise_sampler_seed_in_the_config_fixes_the_path_whatever_the_generator():
    d, x = sde_config("leading", noise_sampler_seed=2024), start()
    assert SchedulerConfig.from_dict(d).noise_sampler_seed == 2024
    assert SchedulerConfig.from_dict(d).to_dict()["noise_sampler_seed"] == 2024  # written back for diffusers
    ours = run_minidiff(d, 9, x, generator(0))
    assert torch.equal(ours[-1], run_minidiff(d, 9, x, generator(1))[-1])
    assert_same_latents(ours, run_diffusers(d, 9, x)[0])  # diffusers reads noise_sampler_seed from the config too


@pytest.mark.parametrize("s_noise", [0.0, 0.5, 1.3])
def test_s_noise_scales_the_added_noise_as_diffusers_step_argument_does(s_noise):
    d, x = sde_config("trailing", "v_prediction", "karras"), start()
    seed = brownian_seed(generator(3))
    ours = run_minidiff(d, 9, x, generator(3), s_noise=s_noise)
    assert_same_latents(ours, run_diffusers(d, 9, x, seed=seed, s_noise=s_noise)[0])
    if s_noise == 0:  # no noise: the generator does not matter
        assert torch.equal(ours[-1], run_minidiff(d, 9, x, generator(4), s_noise=0.0)[-1])


def test_the_capped_split_keeps_a_step_from_sigma_max_to_sigma_min_finite_as_diffusers():
    """Two steps on these linear betas go from σ_max = 293 to σ_min = 0.0073 in the second call's step; rounding
    makes σ_up exceed σ_to there, so the uncapped split takes the square root of a negative number."""
    d = sde_config("linspace", beta_schedule="linear", beta_start=5.336e-05, beta_end=0.0225)
    sampler = make_sampler("dpmpp_sde", SchedulerConfig.from_dict(d), 2)
    sigma_from, sigma_to = (sigma.log().neg().neg().exp() for sigma in sampler.all_sigmas[:2])  # as the step has them
    assert get_ancestral_step(sigma_from, sigma_to)[0].isnan()
    sigma_down, sigma_up = get_ancestral_step(sigma_from, sigma_to, capped=True)
    assert sigma_up == sigma_to and sigma_down == 0
    for dtype in (torch.float64, torch.float32, torch.float16):
        assert_same_trajectory("dpmpp_sde", d, 2, dtype)


def test_prediction_type_sample_takes_the_output_as_x0_where_diffusers_raises():
    d = sde_config("trailing", "sample")
    scheduler = diffusers.DPMSolverSDEScheduler.from_config(d)
    scheduler.set_timesteps(5)
    x = start()
    with pytest.raises(NotImplementedError):
        scheduler.step(x, scheduler.timesteps[0], x)
    sampler = make_sampler("dpmpp_sde", SchedulerConfig.from_dict(d), 5)
    outputs, predictions = [], []

    def model_fn(x_in, t):
        outputs.append(stand_in_model(x_in, t))
        return outputs[-1]

    result = sampler.sample(model_fn, x * sampler.init_noise_sigma, generator(0),
                            lambda i, t, x, x0: predictions.append(x0))
    assert len(outputs) == len(predictions) == 9 and all(torch.equal(a, b) for a, b in zip(outputs, predictions))
    torch.testing.assert_close(result, outputs[-1], rtol=1e-12, atol=1e-12)  # the last step lands on x_0


def test_zero_terminal_snr_is_refused_as_diffusers_class_has_no_such_option():
    assert "rescale_betas_zero_snr" not in inspect.signature(diffusers.DPMSolverSDEScheduler).parameters
    with pytest.raises(ValueError, match="rescale_betas_zero_snr is not available for dpmpp_sde"):
        make_sampler("dpmpp_sde", SchedulerConfig(rescale_betas_zero_snr=True), 10)


def test_minidiff_draws_the_noise_without_torchsde():
    code = ("import sys, torch\n"
            "from minidiff.samplers import SchedulerConfig, make_sampler\n"
            "sampler = make_sampler('dpmpp_sde', SchedulerConfig(), 3)\n"
            "x = sampler.sample(lambda x, t: 0.1 * x, torch.randn(1, 4, 4, 4), torch.Generator().manual_seed(0))\n"
            "assert torch.isfinite(x).all() and 'torchsde' not in sys.modules, sorted(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
