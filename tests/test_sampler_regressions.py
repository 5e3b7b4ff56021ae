"""Named tests for sampler bugs known from other implementations, each pinned on minidiff's samplers.

DPM2's last step (k-diffusion issue #43) is in test_sampler_dpm2.py; the others are here.
"""

import torch
from test_samplers import assert_same_trajectory, config_dict

from minidiff.samplers import SchedulerConfig, make_sampler
from minidiff.samplers.lms import lms_coefficient


def test_lms_history_indexing_pairs_each_weight_with_its_own_slope():
    """The linear multistep weights c_j belong to the slopes d_i, d_{i-1}, ... newest first: with them, any cubic
    slope d(σ) is integrated exactly over the step. A port that pairs them with the history in the wrong order
    (oldest first) or takes the σ's of the wrong step still runs, but wrongly."""
    sampler = make_sampler("lms", SchedulerConfig(), 12)
    sigmas = sampler.all_sigmas.double()
    for i in range(3, 11):
        weights = [lms_coefficient(sampler.all_sigmas, i, j, 4) for j in range(4)]
        for slope, integral in ((lambda s: s**3, lambda s: s**4 / 4), (lambda s: s**2 - s, lambda s: s**3 / 3 - s**2 / 2)):
            exact = float(integral(sigmas[i + 1]) - integral(sigmas[i]))
            newest_first = sum(c * float(slope(sigmas[i - j])) for j, c in enumerate(weights))
            oldest_first = sum(c * float(slope(sigmas[i - 3 + j])) for j, c in enumerate(weights))
            assert abs(newest_first - exact) <= 1e-4 * max(abs(exact), 1e-3)
            assert abs(oldest_first - exact) > 1e-3 * abs(exact)
    for strength in (1.0, 0.6):  # and after an img2img start, where diffusers keeps counting from the whole schedule
        assert_same_trajectory("lms", config_dict("linspace"), 12, strength=strength)


def test_ddpm_adds_the_posterior_standard_deviation_not_its_variance():
    """x_{t'} = mean + sqrt(β̃) z: a port that multiplies z by the variance β̃ itself draws far too little noise."""
    sampler = make_sampler("ddpm", SchedulerConfig(), 10)
    x = torch.zeros(1, 4, 8, 8, dtype=torch.float64)
    steps = []
    sampler.sample(lambda x_in, t: torch.zeros_like(x_in), x, generator=torch.Generator().manual_seed(0),
                   callback=lambda i, t, x_after, x0: steps.append(x_after.clone()))
    t, t_next = sampler.timesteps[:2]
    ab, ab_next = sampler.schedule.alphas_cumprod[t], sampler.schedule.alphas_cumprod[t_next]
    variance = (1 - ab_next) / (1 - ab) * (1 - ab / ab_next)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # from x = 0 with ε = 0 the mean is 0: the first step is the noise alone
    assert torch.allclose(steps[0], variance.sqrt().double() * z, rtol=1e-6)


def test_img2img_starts_at_the_first_timestep_it_runs_not_one_before():
    """With strength s only the last int(steps · s) steps run; the clean latent is noised to the level of the first
    of them. An off-by-one start noises it to the level one step earlier (noisier) or runs one step too many."""
    config = SchedulerConfig()
    full = make_sampler("ddim", config, 20)
    late = make_sampler("ddim", config, 20, strength=0.75)  # 15 of 20 steps
    assert late.timesteps.tolist() == full.timesteps[5:].tolist()
    x0, noise = torch.randn(2, 1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(late.add_noise(x0, noise), full.schedule.add_noise(x0, noise, full.timesteps[5]))
    euler = make_sampler("euler", config, 20, strength=0.75)
    assert torch.equal(euler.add_noise(x0, noise), x0 + noise * euler.all_sigmas[5])
