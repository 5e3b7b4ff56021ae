"""The forward process (minidiff.schedule) against diffusers and against its own definition."""

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr as diffusers_rescale

from minidiff.schedule import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    NoiseSchedule,
    make_betas,
    rescale_zero_terminal_snr,
)
from minidiff.samplers import SchedulerConfig

SCHEDULE_CASES = [
    ("scaled_linear", 0.00085, 0.012),  # Stable Diffusion
    ("linear", 0.0001, 0.02),  # DDPM
    ("squaredcos_cap_v2", 0.0001, 0.02),  # cosine (beta_start/end unused)
]


def schedule_and_reference(beta_schedule, beta_start, beta_end, rescale=False):
    kw = dict(beta_schedule=beta_schedule, beta_start=beta_start, beta_end=beta_end, rescale_betas_zero_snr=rescale)
    return NoiseSchedule.from_config(SchedulerConfig(**kw)), DDPMScheduler(**kw)


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("beta_schedule, beta_start, beta_end", SCHEDULE_CASES)
def test_betas_and_alphas_cumprod_equal_diffusers_exactly(beta_schedule, beta_start, beta_end, rescale):
    ours, ref = schedule_and_reference(beta_schedule, beta_start, beta_end, rescale)
    assert ours.betas.dtype == ref.betas.dtype == torch.float32
    assert torch.equal(ours.betas, ref.betas)
    assert torch.equal(ours.alphas_cumprod, ref.alphas_cumprod)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_snr_rescale_equals_diffusers_and_ends_at_snr_zero(dtype):
    betas = make_betas("scaled_linear").to(dtype)
    ours, ref = rescale_zero_terminal_snr(betas), diffusers_rescale(betas.clone())
    assert (ours - ref).abs().max() <= 1e-12
    schedule = NoiseSchedule(ours)
    assert schedule.alphas_cumprod[-1] == 0 and schedule.snr[-1] == 0
    assert torch.allclose(schedule.alphas_cumprod[0], NoiseSchedule(betas).alphas_cumprod[0])  # first ᾱ kept


def test_sigmas_and_snr_are_consistent():
    schedule = NoiseSchedule.from_config(SchedulerConfig())
    ab = schedule.alphas_cumprod.double()
    assert torch.allclose(schedule.sigmas.double(), ((1 - ab) / ab) ** 0.5, rtol=1e-6)
    assert torch.allclose(schedule.snr.double(), 1 / schedule.sigmas.double() ** 2, rtol=1e-5)
    assert (schedule.sigmas[1:] > schedule.sigmas[:-1]).all()  # noise grows with t


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_add_noise_equals_diffusers(dtype):
    ours, ref = schedule_and_reference("scaled_linear", 0.00085, 0.012)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 4, 8, 8, generator=g, dtype=dtype)
    noise = torch.randn(4, 4, 8, 8, generator=g, dtype=dtype)
    t = torch.tensor([0, 17, 500, 999])
    expected = ref.add_noise(x0, noise, t)
    assert (ours.add_noise(x0, noise, t) - expected).abs().max() == 0
    # an int timestep applies to the whole batch
    assert torch.equal(ours.add_noise(x0, noise, 500), ref.add_noise(x0, noise, torch.full((4,), 500)))


def test_closed_form_q_xt_given_x0_matches_iterating_one_step_forward():
    """x_t from 1000 one-step transitions q(x_t | x_{t-1}) has mean sqrt(ᾱ_t) x_0 and variance 1 - ᾱ_t.

    With N samples the sample mean has standard error sqrt(var / N) and the sample variance
    var * sqrt(2 / (N - 1)); we require both within 5 standard errors (a false alarm has probability < 1e-6).
    """
    schedule = NoiseSchedule.from_config(SchedulerConfig())
    ab = schedule.alphas_cumprod.double()
    N, x0 = 20_000, 1.5
    g = torch.Generator().manual_seed(0)
    x = torch.full((N,), x0, dtype=torch.float64)
    for t in range(schedule.num_train_timesteps):
        x = schedule.step_forward(x, torch.randn(N, generator=g, dtype=torch.float64), t)
        if t in (0, 99, 499, 999):
            mean, var = ab[t] ** 0.5 * x0, 1 - ab[t]
            assert abs(x.mean() - mean) <= 5 * (var / N) ** 0.5, t
            assert abs(x.var() - var) <= 5 * var * (2 / (N - 1)) ** 0.5, t


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_prediction_conversions_round_trip(prediction_type):
    schedule = NoiseSchedule.from_config(SchedulerConfig())
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 400, 998])
    x_t = schedule.add_noise(x0, noise, t)
    output = schedule.target(x0, noise, t, prediction_type)  # what a perfect network would say
    assert (schedule.predicted_x0(output, x_t, t, prediction_type) - x0).abs().max() < 1e-9
    assert (schedule.predicted_eps(output, x_t, t, prediction_type) - noise).abs().max() < 1e-9


def test_v_target_equals_diffusers_get_velocity():
    ours, ref = schedule_and_reference("scaled_linear", 0.00085, 0.012)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 2, 8, 8, generator=g, dtype=torch.float64).unbind(0)
    x0, noise = x0[None], noise[None]
    t = torch.tensor([321])
    assert torch.equal(ours.target(x0, noise, t, "v_prediction"), ref.get_velocity(x0, noise, t))


def test_bad_schedule_arguments_list_the_valid_choices():
    with pytest.raises(ValueError, match="scaled_linear"):
        make_betas("quadratic")
    schedule = NoiseSchedule.from_config(SchedulerConfig())
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match="v_prediction"):
        schedule.predicted_x0(x, x, 10, "score")
    with pytest.raises(ValueError, match="integers"):
        schedule.add_noise(x, x, torch.tensor([1.5]))
    assert set(BETA_SCHEDULES) == {"linear", "scaled_linear", "squaredcos_cap_v2"}
