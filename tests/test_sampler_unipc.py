"""UniPC against diffusers' UniPCMultistepScheduler: its plan, every solver option, and the steps diffusers cannot take.

The shared matrix in test_samplers.py runs the default UniPC (bh2, order 2, x_0 predictions); here: bh1/bh2 x orders
1-3 x predict_x0 x lower_order_final, every σ spacing and final σ, img2img starts, disable_corrector, the solver_type
a DPM-Solver or DEIS file carries, and the last steps where diffusers returns NaN (compared with the exact limit).
Comparisons fail on NaN: a step that diffusers cannot take is left out explicitly, never by a NaN comparing false.
"""

import itertools

import diffusers
import pytest
import torch
from test_samplers import TOLERANCE, config_dict, run_diffusers, run_minidiff, stand_in_model

from minidiff.samplers import SchedulerConfig, make_sampler

SIGMAS = (None, "karras", "exponential", "beta")


def unipc_config(spacing="linspace", prediction_type="epsilon", sigmas=None, **overrides):
    spacings = {f"use_{name}_sigmas": name == sigmas for name in SIGMAS[1:]}
    return config_dict(spacing, prediction_type, **{**spacings, **overrides})


def trajectories(d, steps, dtype=torch.float64, strength=1.0, name="unipc"):
    """(ours, diffusers') latents after every step, from the same noise and (img2img) clean latent."""
    g = torch.Generator().manual_seed(1234)
    x0, noise = torch.randn(2, 2, 4, 8, 8, generator=g, dtype=dtype)
    ref_timesteps, ref = run_diffusers(name, d, steps, x0, noise, 0, strength)
    timesteps, ours = run_minidiff(name, d, steps, x0, noise, 0, strength)
    assert torch.equal(timesteps, ref_timesteps)
    assert len(ours) == len(ref) > 0 and ours[-1].dtype == dtype
    return ours, ref


def assert_close(ours, ref, dtype=torch.float64):
    """Max relative error after every step within the dtype's tolerance; NaN anywhere fails."""
    for i, (a, b) in enumerate(zip(ours, ref)):
        a, b = a.double(), b.double()
        assert torch.isfinite(a).all() and torch.isfinite(b).all(), f"step {i}: not finite"
        error = float((a - b).abs().max() / b.abs().max())
        assert error <= TOLERANCE[dtype], f"step {i}: {error:.2e}"


def diffusers_nan_at_the_end(d):
    """Whether diffusers' last step (to σ = 0) returns NaN: B(h) · 0 with h = ∞, for bh1 and for ε predictions."""
    return d.get("final_sigmas_type", "zero") == "zero" and (d["solver_type"] == "bh1" or not d["predict_x0"])


# ---------------------------------------------------------------------------------------------------------------
# Where UniPC steps: steps.solver_plan is UniPC's set_timesteps


@pytest.mark.parametrize("sigmas", SIGMAS)
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
@pytest.mark.parametrize("schedule", [{}, dict(rescale_betas_zero_snr=True), dict(beta_schedule="squaredcos_cap_v2")])
def test_timesteps_and_sigmas_equal_diffusers_for_every_spacing_and_final_sigma(sigmas, final, schedule):
    for spacing, steps in itertools.product(("leading", "trailing", "linspace"), (1, 2, 7, 25, 50)):
        d = unipc_config(spacing, sigmas=sigmas, final_sigmas_type=final, **schedule)
        ref = diffusers.UniPCMultistepScheduler.from_config(d)
        ref.set_timesteps(steps)
        sampler = make_sampler("unipc", SchedulerConfig.from_dict(d), steps)
        case = (spacing, steps)
        assert sampler.timesteps.dtype == ref.timesteps.dtype and torch.equal(sampler.timesteps, ref.timesteps), case
        assert torch.equal(sampler.all_sigmas, ref.sigmas), case
        assert sampler.init_noise_sigma == float(ref.init_noise_sigma) == 1.0


# ---------------------------------------------------------------------------------------------------------------
# Every solver option, step for step

SOLVER_CASES = list(itertools.product(("bh1", "bh2"), (1, 2, 3), (True, False), (True, False)))


@pytest.mark.parametrize("solver_type, order, predict_x0, lower_order_final", SOLVER_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_solver_option_equals_diffusers_step_for_step(solver_type, order, predict_x0, lower_order_final, dtype):
    # lower_order_final=False ends on σ_0 (to σ = 0 a step of order >= 2 is undefined; see the error test)
    final = "zero" if lower_order_final else "sigma_min"
    k = SOLVER_CASES.index((solver_type, order, predict_x0, lower_order_final))
    for steps in (7, 25):
        spacing = ("leading", "trailing", "linspace")[(k + steps) % 3]
        prediction_type = ("epsilon", "v_prediction", "sample")[(k // 3 + steps) % 3]
        d = unipc_config(spacing, prediction_type, solver_type=solver_type, solver_order=order, predict_x0=predict_x0,
                         lower_order_final=lower_order_final, final_sigmas_type=final)
        ours, ref = trajectories(d, steps, dtype)
        if diffusers_nan_at_the_end(d):
            assert torch.isnan(ref[-1]).any()  # diffusers' own last step; ours is checked against the limit below
            ours, ref = ours[:-1], ref[:-1]
        assert_close(ours, ref, dtype)


@pytest.mark.parametrize("steps", [1, 2, 7, 25, 50])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_step_count_equals_diffusers(steps, order):
    for predict_x0, lower_order_final in [(True, True), (False, False)]:
        d = unipc_config("trailing", "v_prediction", solver_type="bh2", solver_order=order, predict_x0=predict_x0,
                         lower_order_final=lower_order_final, final_sigmas_type="sigma_min")
        assert_close(*trajectories(d, steps))


@pytest.mark.parametrize("sigmas", SIGMAS[1:])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
def test_karras_exponential_and_beta_sigmas_equal_diffusers(sigmas, order, solver_type):
    for final, prediction_type, dtype in [("zero", "epsilon", torch.float64), ("sigma_min", "sample", torch.float32)]:
        d = unipc_config("linspace", prediction_type, sigmas, solver_type=solver_type, solver_order=order,
                         predict_x0=True, final_sigmas_type=final)
        ours, ref = trajectories(d, 25, dtype)
        assert_close(ours[:-1] if diffusers_nan_at_the_end(d) else ours, ref[: len(ours)], dtype)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("predict_x0", [True, False])
@pytest.mark.parametrize("strength", [0.3, 0.75])
def test_img2img_starts_warm_up_from_the_first_step_run_like_diffusers(order, predict_x0, strength):
    d = unipc_config("leading", "v_prediction", solver_type="bh2", solver_order=order, predict_x0=predict_x0,
                     final_sigmas_type="sigma_min", disable_corrector=[12, 20])  # whole-schedule step indices
    for dtype in (torch.float64, torch.float32):
        assert_close(*trajectories(d, 25, dtype, strength), dtype)


def test_v_prediction_at_zero_terminal_snr_equals_diffusers():
    """SD 2.1's setting: ᾱ_{T-1} = 2⁻²⁴ at the first, trailing, step."""
    for order in (1, 2, 3):
        d = unipc_config("trailing", "v_prediction", rescale_betas_zero_snr=True, steps_offset=0, solver_type="bh2",
                         solver_order=order, predict_x0=True)
        assert_close(*trajectories(d, 10))


def test_disable_corrector_skips_the_correction_of_the_listed_steps_like_diffusers():
    base = unipc_config("trailing", solver_type="bh2", solver_order=2, predict_x0=True)
    corrected, _ = trajectories(base, 10)
    for disabled in ([0], [1, 4, 7], list(range(10))):
        ours, ref = trajectories({**base, "disable_corrector": disabled}, 10)
        assert_close(ours, ref)
        first = min(disabled) + 1  # the step whose start is left uncorrected
        assert torch.equal(ours[first - 1], corrected[first - 1]) and not torch.equal(ours[first], corrected[first])


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_solver_options_equal_diffusers_bit_for_bit(order, dtype):
    d = unipc_config("trailing", "epsilon", "karras", solver_type="bh1", solver_order=order, predict_x0=True,
                     lower_order_final=False, final_sigmas_type="sigma_min")
    ours, ref = trajectories(d, 10, dtype)
    assert all(torch.equal(a, b) for a, b in zip(ours[:-1], ref[:-1]))  # (order 3 ends on an h = 0 step, below)


# ---------------------------------------------------------------------------------------------------------------
# The last steps diffusers cannot take


@pytest.mark.parametrize("solver_type, predict_x0", [("bh1", True), ("bh1", False), ("bh2", False)])
def test_the_step_to_sigma_zero_lands_on_the_predicted_x0_where_diffusers_returns_nan(solver_type, predict_x0):
    """The first-order step to σ = 0 in the limit h -> ∞ is the x_0 that m_i implies; diffusers computes ∞ · 0."""
    steps = 7
    # with the last correction off, the last step starts from the very latent the network saw
    d = unipc_config("trailing", "v_prediction", solver_type=solver_type, predict_x0=predict_x0,
                     disable_corrector=[steps - 2])
    sampler = make_sampler("unipc", SchedulerConfig.from_dict(d), steps)
    x0_predictions, latents = [], []

    def callback(i, t, x, x0):
        x0_predictions.append(x0)
        latents.append(x)

    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sampler.sample(stand_in_model, x, callback=callback)
    # (ε predictions agree to float32's α² + s² = 1: their ε is α v + s x, their x_0 α x - s v)
    torch.testing.assert_close(latents[-1], x0_predictions[-1], rtol=1e-12 if predict_x0 else 1e-6, atol=0)
    ours, ref = trajectories(d, steps)
    assert torch.isnan(ref[-1]).all() and torch.isfinite(ours[-1]).all()
    assert_close(ours[:-1], ref[:-1])


def test_a_zero_length_last_step_keeps_the_latent():
    """Re-spaced σ's with "sigma_min" end on the last σ repeated: h = 0, so the last step only corrects the latent it
    starts from. Orders 1 and 2 take it as diffusers does; order 3 makes diffusers solve a singular system (NaN)."""
    for order, disabled in itertools.product((1, 2, 3), ([], [8])):
        d = unipc_config("linspace", sigmas="karras", solver_type="bh2", solver_order=order, predict_x0=True,
                         lower_order_final=False, final_sigmas_type="sigma_min", disable_corrector=disabled)
        ours, ref = trajectories(d, 10)
        if disabled:  # no correction before it: the latent comes out as it went in
            assert torch.equal(ours[-1], ours[-2])
        if order == 3:
            assert torch.isnan(ref[-1]).all() and torch.isfinite(ours[-1]).all()
            ours, ref = ours[:-1], ref[:-1]
        assert_close(ours, ref)


# ---------------------------------------------------------------------------------------------------------------
# Config fields: UniPC's defaults, and files written for the other solvers


@pytest.mark.parametrize("solver_type", [None, "midpoint", "heun", "logrho"])
def test_a_missing_or_other_solvers_solver_type_means_bh2_as_in_diffusers(solver_type):
    d = unipc_config("trailing", solver_order=3, predict_x0=True)
    if solver_type is not None:
        d["solver_type"] = solver_type
    assert diffusers.UniPCMultistepScheduler.from_config(d).config.solver_type == "bh2"
    assert make_sampler("unipc", SchedulerConfig.from_dict(d), 10).config.solver_type == (solver_type or "bh2")
    ours, ref = trajectories(d, 10)
    bh2, _ = trajectories({**d, "solver_type": "bh2"}, 10)
    assert_close(ours, ref)
    assert all(torch.equal(a, b) for a, b in zip(ours, bh2))


@pytest.mark.parametrize("name", ["dpmpp_2m", "deis"])
def test_a_unipc_file_drives_the_other_solvers_like_diffusers(name):
    """A file written for UniPC (solver_type bh1/bh2, predict_x0, disable_corrector) loads for DPM++ 2M and DEIS,
    which take their own solver_type instead, as diffusers' classes do."""
    for solver_type in ("bh1", "bh2"):
        d = unipc_config("trailing", solver_type=solver_type, predict_x0=False, disable_corrector=[1])
        assert_close(*trajectories(d, 10, name=name))


def test_unipc_settings_round_trip_through_to_dict_and_diffusers():
    config = SchedulerConfig(solver_type="bh1", solver_order=3, predict_x0=False, disable_corrector=[0, 2])
    assert SchedulerConfig.from_dict(config.to_dict()) == config
    ref = diffusers.UniPCMultistepScheduler.from_config(config.to_dict()).config
    assert (ref.solver_type, ref.solver_order, ref.predict_x0, ref.disable_corrector) == ("bh1", 3, False, [0, 2])
    assert "solver_type" not in SchedulerConfig().to_dict()  # unset: each diffusers class takes its own default
    assert SchedulerConfig().disable_corrector == [] and SchedulerConfig().predict_x0 is True


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: make_sampler("unipc", SchedulerConfig(lower_order_final=False), 10), "final_sigmas_type='zero'"),
        (lambda: make_sampler("unipc", SchedulerConfig(lower_order_final=False, solver_order=3), 1), "undefined"),
        (lambda: SchedulerConfig(solver_order=4), "1, 2, 3"),
        (lambda: SchedulerConfig(solver_type="bh3"), "'bh1', 'bh2'"),
        (lambda: make_sampler("dpmpp_2m", SchedulerConfig(solver_order=3), 10), "solver_order=3"),
    ],
)
def test_settings_unipc_cannot_honour_raise_one_line_errors(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_lower_order_final_false_with_first_order_ends_at_sigma_zero_like_diffusers():
    d = unipc_config("trailing", solver_type="bh2", solver_order=1, predict_x0=True, lower_order_final=False)
    assert_close(*trajectories(d, 10))
