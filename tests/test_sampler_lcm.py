"""The lcm sampler against diffusers' LCMScheduler, and Latent Consistency Models through minidiff's pipelines.

The sampler half drives both sides with the shared stand-in network of test_samplers.py. The pipeline half builds
a tiny LatentConsistencyModelPipeline (the tiny model's text encoder and VAE, a U-Net with time_cond_proj_dim = 8,
LCMScheduler), saves it with save_pretrained, loads the folder into minidiff and compares images and latents at
the tolerance of test_pipelines.py.
"""

import diffusers
import pytest
import torch
from test_pipelines import PROMPTS, TOL, assert_close, generator, picture
from test_samplers import assert_same_trajectory, config_dict, diffusers_scheduler, rel_err, stand_in_model
from tiny_pipeline import UNET, randomize_, reference_parts, tiny_model

from minidiff.fast import GuidedStep
from minidiff.models.embeddings import guidance_scale_embedding
from minidiff.pipelines import StableDiffusion
from minidiff.samplers import SAMPLER_NAMES, SchedulerConfig, make_sampler
from minidiff.samplers.lcm import boundary_scalings

ONE_THREAD = True  # tiny networks (tests/conftest.py)
COND_DIM = 8  # the tiny LCM U-Net's time_cond_proj_dim
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU; none is present")


# ---------------------------------------------------------------------------------------------------------------
# The sampler


@pytest.mark.parametrize("original", [50, 20, 1000])
def test_timesteps_equal_diffusers_for_every_strength_and_original_schedule(original):
    d = config_dict(original_inference_steps=original)
    ref = diffusers.LCMScheduler.from_config(d)
    for steps in (1, 2, 4, 7, 20):
        for strength in (1.0, 0.75, 0.5, 0.2):
            sampler_kwargs = dict(strength=strength)
            if int(original * strength) < steps:  # both refuse: fewer candidates than steps
                with pytest.raises(ValueError):
                    ref.set_timesteps(steps, strength=strength)
                with pytest.raises(ValueError, match="timesteps for"):
                    make_sampler("lcm", SchedulerConfig.from_dict(d), steps, **sampler_kwargs)
                continue
            ref.set_timesteps(steps, strength=strength)
            sampler = make_sampler("lcm", SchedulerConfig.from_dict(d), steps, **sampler_kwargs)
            assert torch.equal(sampler.timesteps, ref.timesteps), (steps, strength)
            assert len(sampler.timesteps) == steps  # img2img runs every step, from a less noisy start


def test_four_steps_are_the_distillation_schedule_picked_evenly():
    assert make_sampler("lcm", SchedulerConfig(), 4).timesteps.tolist() == [999, 759, 499, 259]
    assert make_sampler("lcm", SchedulerConfig(), 4, strength=0.5).timesteps.tolist() == [499, 379, 259, 139]


def test_boundary_scalings_equal_diffusers_and_meet_the_boundary_condition():
    ref = diffusers.LCMScheduler(timestep_scaling=10.0)
    for t in (torch.tensor(0), torch.tensor(19), torch.tensor(999)):
        assert [float(c) for c in boundary_scalings(t, 10.0)] == [
            float(c) for c in ref.get_scalings_for_boundary_condition_discrete(t)]
    c_skip, c_out = boundary_scalings(torch.tensor(0), 10.0)
    assert (float(c_skip), float(c_out)) == (1.0, 0.0)  # f(x, 0) = x


@pytest.mark.parametrize("overrides", [
    dict(timestep_scaling=0.05),  # τ = t / 20: c_skip x_t is no longer negligible
    dict(clip_sample=True, clip_sample_range=0.3, original_inference_steps=20),
    dict(rescale_betas_zero_snr=True, prediction_type="v_prediction"),
    dict(prediction_type="sample", beta_schedule="squaredcos_cap_v2"),
])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_config_options_trajectory_equals_diffusers(overrides, dtype):
    assert_same_trajectory("lcm", config_dict(**overrides), 6, dtype)


@pytest.mark.parametrize("strength", [0.5, 0.9])
def test_img2img_trajectory_equals_latent_consistency_img2img_loop(strength):
    """test_samplers' diffusers loop sets LCMScheduler's timesteps with strength, as diffusers'
    LatentConsistencyModelImg2ImgPipeline does, and runs all of them from the picture noised to the first."""
    assert_same_trajectory("lcm", config_dict(), 4, strength=strength)


def test_callback_sees_diffusers_denoised_and_the_run_returns_the_last_one():
    """x0_pred of every call is LCMScheduler's ``denoised``; the last step adds no noise and returns it."""
    d = config_dict(timestep_scaling=0.05)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    scheduler, ref_denoised, ref = diffusers_scheduler("lcm", d, 5), [], x
    g = torch.Generator().manual_seed(0)
    for t in scheduler.timesteps:
        ref, denoised = scheduler.step(stand_in_model(ref, t), t, ref, generator=g, return_dict=False)
        ref_denoised.append(denoised)
    seen = []  # (x after the call, x0_pred)
    sampler = make_sampler("lcm", SchedulerConfig.from_dict(d), 5)
    ours = sampler.sample(stand_in_model, x, generator=torch.Generator().manual_seed(0),
                          callback=lambda i, t, x, x0: seen.append((x, x0)))
    assert max(rel_err(x0, expected) for (_, x0), expected in zip(seen, ref_denoised, strict=True)) <= 1e-6
    assert torch.equal(ours, seen[-1][0]) and torch.equal(ours, seen[-1][1])
    assert all(rel_err(x, x0) > 0.1 for x, x0 in seen[:-1])  # earlier steps pass on x̂_0 noised afresh


def test_an_lcm_scheduler_file_loads_for_every_sampler_and_writes_back():
    saved = dict(diffusers.LCMScheduler(original_inference_steps=25, timestep_scaling=5.0).config)
    config = SchedulerConfig.from_dict(saved)
    assert (config.original_inference_steps, config.timestep_scaling) == (25, 5.0)
    for name in SAMPLER_NAMES:
        make_sampler(name, config, 4)
    rebuilt = diffusers.LCMScheduler.from_config(config.to_dict()).config
    assert (rebuilt.original_inference_steps, rebuilt.timestep_scaling) == (25, 5.0)


@pytest.mark.parametrize("call, fragment", [
    (lambda c: make_sampler("lcm", c, 51), "at most original_inference_steps=50"),
    (lambda c: make_sampler("lcm", c, 30, strength=0.5), "strength >= 0.6"),
    (lambda c: make_sampler("lcm", c, 4, strength=0.0), "(0, 1]"),
    (lambda c: make_sampler("lcm", SchedulerConfig(original_inference_steps=2000), 4), "original_inference_steps must"),
    (lambda c: make_sampler("lcm", c, 4, karras=True), "not for lcm"),
    (lambda c: make_sampler("lcm", c, 4, eta=0.5), "only to the ddim"),
])
def test_bad_arguments_raise_value_error(call, fragment):
    with pytest.raises(ValueError) as info:
        call(SchedulerConfig())
    assert fragment in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# Latent Consistency Models in the pipelines


@pytest.fixture(scope="module")
def lcm(tmp_path_factory):
    """(diffusers LatentConsistencyModelPipeline, minidiff's StableDiffusion loaded from its save_pretrained)."""
    parts = dict(reference_parts(str(tiny_model().path)))
    parts.pop("controlnet", None)
    parts["unet"] = randomize_(diffusers.UNet2DConditionModel(**UNET, time_cond_proj_dim=COND_DIM), 30)
    parts["scheduler"] = diffusers.LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    reference = diffusers.LatentConsistencyModelPipeline(**parts)
    reference.set_progress_bar_config(disable=True)
    folder = tmp_path_factory.mktemp("tiny-lcm")
    reference.save_pretrained(folder)
    return reference, StableDiffusion.from_pretrained(folder)


@pytest.mark.parametrize("guidance_scale", [8.0, 2.0])
def test_text_to_image_equals_latent_consistency_model_pipeline(lcm, guidance_scale):
    reference, sd = lcm
    settings = dict(guidance_scale=guidance_scale, width=64, height=32, num_images_per_prompt=2)
    expected = reference(PROMPTS, num_inference_steps=4, generator=generator(), output_type="pt", **settings).images
    expected_latents = reference(PROMPTS, num_inference_steps=4, generator=generator(), output_type="latent",
                                 **settings).images
    ours = sd.text_to_image(PROMPTS, steps=4, sampler="lcm", seed=0, progress=False, **settings)
    assert_close(ours.images, expected)
    assert rel_err(ours.latents, expected_latents) <= TOL


def test_the_guidance_scale_reaches_the_unet_as_an_embedding_without_a_guidance_batch(lcm):
    _, sd = lcm
    calls = []
    hook = sd.unet.register_forward_pre_hook(lambda module, args, kwargs: calls.append((args, kwargs)),
                                             with_kwargs=True)
    try:
        eight = sd.text_to_image("a red circle", steps=2, sampler="lcm", guidance_scale=8.0, width=32, height=32,
                                 seed=0, progress=False)
    finally:
        hook.remove()
    assert len(calls) == 2
    for args, kwargs in calls:
        assert args[0].shape[0] == 1 and args[2].shape[0] == 1  # latents and context: the prompt only
        torch.testing.assert_close(kwargs["timestep_cond"], guidance_scale_embedding(torch.tensor([7.0]), COND_DIM),
                                   rtol=0, atol=0)
    two = sd.text_to_image("a red circle", steps=2, sampler="lcm", guidance_scale=2.0, width=32, height=32, seed=0,
                           progress=False)
    assert rel_err(two.images, eight.images) > 1e-3  # the scale changes the picture


def test_image_to_image_equals_latent_consistency_img2img_pipeline(lcm):
    reference, sd = lcm
    ref_pipe = diffusers.LatentConsistencyModelImg2ImgPipeline(**reference.components)
    ref_pipe.set_progress_bar_config(disable=True)
    image = picture(64, 32, seed=4)
    expected = ref_pipe("a big yellow star", image=image, strength=0.5, num_inference_steps=4, guidance_scale=6.0,
                        generator=generator(1), output_type="pt").images
    ours = sd.image_to_image("a big yellow star", image, strength=0.5, steps=4, sampler="lcm", guidance_scale=6.0,
                             seed=1, progress=False)
    assert_close(ours.images, expected)


def test_a_negative_prompt_for_an_lcm_unet_is_an_error(lcm):
    _, sd = lcm
    with pytest.raises(ValueError, match="no negative prompt"):
        sd.text_to_image("a red circle", negative_prompt="blue", steps=2, sampler="lcm", progress=False)


def test_lcm_sampler_on_a_plain_model_equals_stable_diffusion_pipeline_with_lcm_scheduler():
    """A U-Net without time_cond_proj_dim keeps classifier-free guidance's doubled batch, as diffusers' does."""
    tiny = tiny_model()
    parts = dict(reference_parts(str(tiny.path)))
    parts.pop("controlnet", None)
    config = diffusers.PNDMScheduler.load_config(tiny.path / "scheduler")
    reference = diffusers.StableDiffusionPipeline(**parts, scheduler=diffusers.LCMScheduler.from_config(config))
    reference.set_progress_bar_config(disable=True)
    settings = dict(guidance_scale=7.5, width=64, height=32)
    expected = reference(PROMPTS, negative_prompt=["a blue square"] * 2, num_inference_steps=4, generator=generator(),
                         output_type="pt", **settings).images
    ours = StableDiffusion.from_pretrained(tiny.path).text_to_image(
        PROMPTS, negative_prompt="a blue square", steps=4, sampler="lcm", seed=0, progress=False, **settings)
    assert_close(ours.images, expected)


def test_the_cuda_graph_step_checks_an_lcm_unet_gets_no_guidance_batch(lcm):
    _, sd = lcm
    context = torch.zeros(2, 77, 64)  # a [unconditional; conditional] pair for one latent
    with pytest.raises(ValueError, match="expected 1"):
        GuidedStep(sd.unet, (1, 4, 8, 8), context, guidance_scale=8.0)


@cuda_only
def test_the_cuda_graph_step_of_an_lcm_unet_replays_the_pipeline_step(lcm):
    _, sd = lcm
    sd.unet.to("cuda")
    try:
        context = torch.randn(2, 77, 64, generator=torch.Generator().manual_seed(5)).cuda()
        x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(6)).cuda()
        step = GuidedStep(sd.unet, x.shape, context, guidance_scale=8.0)
        t = torch.tensor(759)
        eager = sd.guided_unet(context, 8.0)(x, t)
        assert rel_err(step(x, t), eager) <= 1e-5
    finally:
        sd.unet.to("cpu")
