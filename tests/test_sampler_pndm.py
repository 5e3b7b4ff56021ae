"""PNDM against diffusers' PNDMScheduler: the Runge–Kutta warm-up (skip_prk_steps false, the class default), the
PLMS warm-up, the step counts 1, 2, 7, 25 and 50, img2img starts that land inside a warm-up, inpainting; the math
without diffusers (PLMS with a constant ε is DDIM); and default_sampler_for, which names the sampler a model's
scheduler_config.json asks for. The shared matrix (tests/test_samplers.py) runs PLMS only, as SD's files set it."""

import inspect
import itertools
import json

import diffusers
import pytest
import torch
from test_samplers import (
    DIFFUSERS_CLASSES,
    SPACINGS,
    assert_same_trajectory,
    config_dict,
    diffusers_scheduler,
    rel_err,
    run_minidiff,
)
from test_scheduler_config import SD15_SCHEDULER_FILE

from minidiff.samplers import CLASS_DEFAULTS, SAMPLERS, SchedulerConfig, default_sampler_for, make_sampler

STEPS = (1, 2, 7, 25, 50)
RUNGE_KUTTA_STEPS = (4, 7, 25, 50)  # the warm-up's 3 steps and at least one more
DTYPES = (torch.float64, torch.float32)


def pndm_config(spacing="leading", prediction_type="epsilon", runge_kutta=False, **overrides):
    return config_dict(spacing, prediction_type, skip_prk_steps=not runge_kutta, **overrides)


@pytest.mark.parametrize("runge_kutta", [False, True])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_timesteps_equal_diffusers_with_and_without_the_runge_kutta_warm_up(spacing, runge_kutta):
    for prediction_type, steps in itertools.product(("epsilon", "v_prediction"), STEPS):
        d = pndm_config(spacing, prediction_type, runge_kutta)
        if runge_kutta and steps < 4:
            with pytest.raises(ValueError):  # numpy cannot broadcast the warm-up's 8 offsets onto < 4 timesteps
                diffusers_scheduler("pndm", d, steps)
            with pytest.raises(ValueError, match="steps >= 4"):
                make_sampler("pndm", SchedulerConfig.from_dict(d), steps)
            continue
        ref = diffusers_scheduler("pndm", d, steps)
        sampler = make_sampler("pndm", SchedulerConfig.from_dict(d), steps)
        assert sampler.timesteps.dtype == ref.timesteps.dtype == torch.int64
        assert torch.equal(sampler.timesteps, ref.timesteps), steps
        assert len(sampler.timesteps) == (steps + 9 if runge_kutta else steps + 1 if steps > 1 else 1)


@pytest.mark.parametrize("steps", RUNGE_KUTTA_STEPS)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_runge_kutta_warm_up_latent_after_every_call_equals_diffusers(steps, prediction_type, dtype):
    for spacing in SPACINGS:  # linspace and trailing take the warm-up's midpoints from leading's step size
        assert_same_trajectory("pndm", pndm_config(spacing, prediction_type, runge_kutta=True), steps, dtype)


@pytest.mark.parametrize("runge_kutta", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_equals_diffusers_bit_for_bit(runge_kutta, dtype):
    for prediction_type in ("epsilon", "v_prediction"):
        d = pndm_config("leading", prediction_type, runge_kutta)
        assert_same_trajectory("pndm", d, 10, dtype)
        assert_same_trajectory("pndm", d, 10, dtype, strength=0.6)


@pytest.mark.parametrize("runge_kutta", [False, True])
@pytest.mark.parametrize("steps", STEPS)
def test_named_step_counts_equal_diffusers(steps, runge_kutta):
    if runge_kutta and steps < 4:
        return  # refused by both (the timesteps test above)
    for dtype in DTYPES:
        assert_same_trajectory("pndm", pndm_config("leading", "v_prediction", runge_kutta), steps, dtype)


# (steps, strength): 25 at 0.96 skips one entry, so img2img starts on the duplicated PLMS timestep; 7 at 0.3
# starts in the third Runge–Kutta step and ends before the warm-up does (11 calls of 12)
IMG2IMG_CASES = [(25, 0.3), (25, 0.75), (25, 0.96), (7, 0.3), (7, 0.5), (50, 0.6)]


@pytest.mark.parametrize("runge_kutta", [False, True])
@pytest.mark.parametrize("steps, strength", IMG2IMG_CASES)
def test_img2img_slices_the_call_list_by_steps_and_equals_diffusers(steps, strength, runge_kutta):
    """diffusers' img2img skips t_start * order entries, and PNDMScheduler.order is 1: whole calls, not steps."""
    d = pndm_config("leading", "epsilon", runge_kutta)
    sampler = make_sampler("pndm", SchedulerConfig.from_dict(d), steps, strength=strength)
    t_start = steps - int(steps * strength)
    assert torch.equal(sampler.timesteps, diffusers_scheduler("pndm", d, steps).timesteps[t_start:])
    for dtype in DTYPES:
        assert_same_trajectory("pndm", d, steps, dtype, strength=strength)


@pytest.mark.parametrize("runge_kutta", [False, True])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_inpainting_blend_through_the_callback_equals_diffusers(spacing, runge_kutta):
    """The callback sees what diffusers' step returns, warm-up points included, so blending there is diffusers'."""
    assert_same_trajectory("pndm", pndm_config(spacing, "epsilon", runge_kutta), 7, masked=True)


@pytest.mark.parametrize("overrides", [dict(set_alpha_to_one=True, beta_schedule="linear"),
                                       dict(beta_schedule="squaredcos_cap_v2")])
@pytest.mark.parametrize("runge_kutta", [False, True])
def test_config_options_equal_diffusers(overrides, runge_kutta):
    assert_same_trajectory("pndm", pndm_config("leading", "epsilon", runge_kutta, **overrides), 10)


def test_plms_warm_up_calls_the_second_timestep_twice_and_its_first_call_takes_a_ddim_step():
    d = pndm_config("leading")
    sampler = make_sampler("pndm", SchedulerConfig.from_dict(d), 7)
    assert sampler.timesteps.tolist() == [853, 711, 711, 569, 427, 285, 143, 1]
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 1, 4, 8, 8, generator=g, dtype=torch.float64)
    pndm = run_minidiff("pndm", d, 7, x0, noise, 0)[1]
    ddim = run_minidiff("ddim", d, 7, x0, noise, 0)[1]
    # (1e-6: the two formulas round their float32 ᾱ's differently)
    assert rel_err(pndm[0], ddim[0]) < 1e-6  # the predictor x̃: DDIM's step from 853 to 711
    assert rel_err(pndm[1], ddim[0]) > 1e-4  # then redone with the mean of ε(x_853) and ε(x̃)


@pytest.mark.parametrize("runge_kutta", [False, True])
def test_with_a_constant_epsilon_every_step_is_a_ddim_step(runge_kutta):
    """Adams–Bashforth and Runge–Kutta weights sum to 1, so equal ε's combine to that ε and each step is φ, DDIM's
    deterministic step. Checked against minidiff's DDIM, not diffusers."""
    config = SchedulerConfig.from_dict(pndm_config("leading", runge_kutta=runge_kutta))
    eps = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pndm = make_sampler("pndm", config, 10).sample(lambda x, t: eps, x)
    ddim = make_sampler("ddim", config, 10).sample(lambda x, t: eps, x)
    assert rel_err(pndm, ddim) < 1e-6  # the two formulas round their float32 ᾱ's differently


def test_sample_prediction_is_refused_as_diffusers_refuses_it():
    with pytest.raises(ValueError, match="'epsilon' or 'v_prediction'"):
        make_sampler("pndm", SchedulerConfig(prediction_type="sample"), 10)
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        make_sampler("pndm", SchedulerConfig(rescale_betas_zero_snr=True), 10)


def test_skip_prk_steps_comes_from_the_file_and_defaults_to_false_as_in_diffusers():
    assert SchedulerConfig.from_dict(SD15_SCHEDULER_FILE).skip_prk_steps  # SD 1.5's file: PLMS only
    without = {k: v for k, v in SD15_SCHEDULER_FILE.items() if k != "skip_prk_steps"}
    assert not SchedulerConfig.from_dict(without).skip_prk_steps
    for file in (SD15_SCHEDULER_FILE, without):
        ref = diffusers.PNDMScheduler.from_config(file)
        ref.set_timesteps(10)
        assert torch.equal(make_sampler("pndm", SchedulerConfig.from_dict(file), 10).timesteps, ref.timesteps)
    assert "skip_prk_steps" not in SchedulerConfig.from_dict(without).to_dict()  # left out, as the file left it


# ---------------------------------------------------------------------------------------------------------------
# default_sampler_for: the sampler a model's scheduler_config.json names


def test_a_model_folder_naming_pndm_is_detected(tmp_path):
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_FILE))
    d = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert default_sampler_for(d["_class_name"], d) == "pndm"


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_samplers_diffusers_class_maps_back_to_it(name):
    sampler = SAMPLERS[name]
    assert default_sampler_for(sampler.diffusers_class, {**SD15_SCHEDULER_FILE, **sampler.diffusers_options}) == name


def test_samplers_sharing_a_class_are_told_apart_by_the_config():
    assert default_sampler_for("DPMSolverMultistepScheduler", {}) == "dpmpp_2m"  # the class's default
    assert default_sampler_for("DPMSolverMultistepScheduler", {"algorithm_type": None}) == "dpmpp_2m"
    assert default_sampler_for("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}) == "dpmpp_2m"
    sde = "dpmpp_2m_sde" if "dpmpp_2m_sde" in SAMPLERS else None  # never the deterministic dpmpp_2m
    assert default_sampler_for("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}) == sde
    for class_name in ("KDPM2AncestralDiscreteScheduler", "FlowMatchEulerDiscreteScheduler", "", None):
        if class_name not in {sampler.diffusers_class for sampler in SAMPLERS.values()}:
            assert default_sampler_for(class_name, {}) is None


def test_class_defaults_are_diffusers_defaults_for_every_distinguishing_setting():
    """A config that leaves out a setting of ``diffusers_options`` means the class's default: CLASS_DEFAULTS must
    hold it, and hold what diffusers' constructor says."""
    for sampler in SAMPLERS.values():
        signature = inspect.signature(DIFFUSERS_CLASSES[sampler.name].__init__).parameters
        for key in sampler.diffusers_options:
            assert CLASS_DEFAULTS[sampler.diffusers_class][key] == signature[key].default
