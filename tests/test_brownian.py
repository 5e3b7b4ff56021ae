"""minidiff.brownian draws the Brownian-tree noise of diffusers' DPMSolverSDEScheduler (torchsde's
BrownianInterval) bit for bit, and the numbers are a Brownian path: increments add up and are N(0, I) once
normalised."""

import random
import warnings

import pytest
import torch

torchsde = pytest.importorskip("torchsde")
from diffusers import DPMSolverSDEScheduler  # noqa: E402
from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler  # noqa: E402

from minidiff.brownian import BrownianTree, BrownianTreeNoise  # noqa: E402

ONE_THREAD = True  # tests/conftest.py
SIGMA_MIN, SIGMA_MAX = 0.0292, 14.6146  # Stable Diffusion's schedule


@pytest.fixture(autouse=True)
def quiet_torchsde():
    """torchsde warns when a query falls outside [t0, t1] (and clamps it), as DPM++ SDE's last step does."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Should have", category=UserWarning)
        yield


class Recorder:
    """Stands in for a scheduler's noise sampler: keeps each query and diffusers' answer to it."""

    def __init__(self, sampler):
        self.sampler, self.queries, self.answers = sampler, [], []

    def __call__(self, sigma, sigma_next):
        self.queries.append((sigma, sigma_next))
        self.answers.append(self.sampler(sigma, sigma_next))
        return self.answers[-1]


def dpmpp_sde_run(x, seed, steps, **config):
    """Run diffusers' DPM++ SDE on a stand-in model; returns its noise sampler's queries and answers, and the
    σ range it was built for."""
    scheduler = DPMSolverSDEScheduler(beta_schedule="scaled_linear", **config)
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas
    sigma_range = sigmas[sigmas > 0].min().item(), sigmas.max().item()
    recorder = scheduler.noise_sampler = Recorder(BrownianTreeNoiseSampler(x, *sigma_range, seed))
    sample = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_output = 0.1 * scheduler.scale_model_input(sample, t)
        sample = scheduler.step(model_output, t, sample).prev_sample
    return recorder, sigma_range


def start_noise(shape, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)


@pytest.mark.parametrize("steps", [5, 25])
@pytest.mark.parametrize("karras", [False, True])
@pytest.mark.parametrize("shape, seed", [((1, 4, 8, 8), 0), ((1, 4, 8, 8), 2**40 + 7), ((2, 4, 8, 8), 42),
                                         ((2, 4, 8, 8), [3, 9])])
def test_the_noise_of_a_dpmpp_sde_run_is_diffusers_noise_bit_for_bit(steps, karras, shape, seed):
    x = start_noise(shape)
    recorder, sigma_range = dpmpp_sde_run(x, seed, steps, use_karras_sigmas=karras)
    assert len(recorder.queries) == 2 * (steps - 1)  # a midpoint and a whole step each, none on the last
    assert recorder.queries[-1][1] < round(sigma_range[0], 6)  # below the tree's rounded start: clamped
    noise = BrownianTreeNoise(x, *sigma_range, seed)
    for (sigma, sigma_next), expected in zip(recorder.queries, recorder.answers):
        ours = noise(sigma, sigma_next)
        assert ours.shape == x.shape and ours.dtype == torch.float32 and torch.equal(ours, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_repeated_and_shuffled_queries_give_diffusers_noise_bit_for_bit(dtype):
    x = start_noise((2, 4, 8, 8), dtype)
    sigmas = torch.exp(torch.linspace(2.68, -3.53, 12))
    steps = [(sigmas[i], sigmas[i + 1]) for i in range(11)] + [(sigmas[i], (sigmas[i] * sigmas[i + 1]).sqrt())
                                                             for i in range(11)]
    steps = steps + steps[::3] + [(SIGMA_MAX, SIGMA_MIN), (0.03, 0.5), (1.0, 1.0 + 3e-6)]
    random.Random(0).shuffle(steps)
    reference = BrownianTreeNoiseSampler(x, SIGMA_MIN, SIGMA_MAX, 5)
    ours = BrownianTreeNoise(x, SIGMA_MIN, SIGMA_MAX, 5)
    for sigma, sigma_next in steps:
        expected = reference(sigma, sigma_next)
        assert expected.dtype == dtype and torch.equal(ours(sigma, sigma_next), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_tree_gives_torchsde_increments_bit_for_bit(dtype):
    t0, t1 = 0.0291675, 14.614642
    reference = torchsde.BrownianInterval(t0=t0, t1=t1, size=(3, 5), dtype=dtype, entropy=123, tol=1e-6,
                                          pool_size=24, halfway_tree=True)
    tree = BrownianTree(t0, t1, (3, 5), seed=123, dtype=dtype)
    rng = random.Random(1)
    for _ in range(40):
        s, t = sorted(rng.uniform(t0 - 0.1, t1 + 0.1) for _ in range(2))  # outside [t0, t1]: clamped
        assert torch.equal(tree(s, t), reference(s, t))
    assert torch.equal(tree(t0, t1), reference(t0, t1)) and torch.equal(tree(2.0, 2.0), reference(2.0, 2.0))


def test_one_seed_per_batch_element_draws_each_element_from_its_own_path():
    x = start_noise((2, 4, 8, 8))
    batch = BrownianTreeNoise(x, SIGMA_MIN, SIGMA_MAX, [3, 9])(4.0, 2.0)
    for i, seed in enumerate([3, 9]):
        assert torch.equal(batch[i : i + 1], BrownianTreeNoise(x[i : i + 1], SIGMA_MIN, SIGMA_MAX, seed)(4.0, 2.0))


def test_without_a_seed_the_seed_comes_from_torchs_global_generator_as_in_diffusers():
    x = start_noise((1, 4, 8, 8))
    torch.manual_seed(11)
    expected = BrownianTreeNoiseSampler(x, SIGMA_MIN, SIGMA_MAX)(3.0, 1.0)
    torch.manual_seed(11)
    assert torch.equal(BrownianTreeNoise(x, SIGMA_MIN, SIGMA_MAX)(3.0, 1.0), expected)


def test_a_different_seed_gives_different_noise_and_the_same_seed_the_same():
    x = start_noise((1, 4, 8, 8))
    first, again, other = (BrownianTreeNoise(x, SIGMA_MIN, SIGMA_MAX, seed)(3.0, 1.0) for seed in (0, 0, 1))
    assert torch.equal(first, again) and not torch.allclose(first, other, atol=0.1)


def test_the_noise_is_standard_normal_and_independent_from_step_to_step():
    x = torch.zeros(1, 4, 64, 64)
    noise = BrownianTreeNoise(x, SIGMA_MIN, SIGMA_MAX, 0)
    sigmas = torch.exp(torch.linspace(2.68, -3.53, 9))
    draws = [noise(sigmas[i], sigmas[i + 1]).flatten() for i in range(8)]  # 16384 numbers each
    for z in draws:
        assert abs(z.mean()) < 0.04 and abs(z.std() - 1) < 0.03
    for z, z_next in zip(draws, draws[1:]):
        assert abs(torch.corrcoef(torch.stack([z, z_next]))[0, 1]) < 0.04


def test_increments_over_adjacent_intervals_add_up_like_a_path():
    tree = BrownianTree(0.03, 14.6, (4, 8, 8), seed=2, dtype=torch.float64)
    whole, parts = tree(0.5, 9.0), tree(0.5, 1.7) + tree(1.7, 4.25) + tree(4.25, 9.0)
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-12)
    assert torch.equal(tree(9.0, 9.0), torch.zeros(4, 8, 8, dtype=torch.float64))


def test_bad_arguments_are_errors_that_say_what_to_do():
    x = start_noise((2, 4, 8, 8))
    with pytest.raises(ValueError, match="got 3 seeds for a batch of 2; pass one seed per batch element"):
        BrownianTreeNoise(x, SIGMA_MIN, SIGMA_MAX, [1, 2, 3])
    with pytest.raises(ValueError, match="exceeds sigma_max .*; pass the smallest σ first"):
        BrownianTreeNoise(x, SIGMA_MAX, SIGMA_MIN, 0)
    with pytest.raises(ValueError, match="runs backwards; ask for W"):
        BrownianTree(0.0, 1.0, (2,), seed=0)(0.7, 0.2)
