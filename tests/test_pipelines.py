"""minidiff's pipelines reproduce diffusers' Stable Diffusion pipelines image for image.

Both sides load the same tiny random model (tests/tiny_pipeline.py) and run with the same seed, sampler and
settings; the images (in [0, 1], before rounding to 8 bits) must agree within a relative error
max |a - b| / max |b| of TOL = 3e-5 in float32: the largest measured is 1e-5 (the libraries sum in slightly
different orders, and the tiny random networks amplify it). In float16 both take the same float16 operations in
the same order, and the latents come out bit for bit equal; the images agree within HALF_TOL = 5e-4 because
diffusers returns them in float16 (steps of 2^-11 near 1) and minidiff in float32.
Every comparison also checks that the images are not trivially equal (mostly unclamped, not constant).
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_pipeline import tiny_model

from minidiff.pipelines import StableDiffusion

TOL = 3e-5  # max relative error of float32 images
HALF_TOL = 5e-4  # of float16 images: twice the rounding of diffusers' float16 images near 1 (2^-12)
HALF = torch.float16  # runs on the CPU
# Each of diffusers' scheduler families once: deterministic, ancestral (fresh noise), ᾱ-space, multistep + Karras.
SAMPLERS = [("euler", False), ("euler_a", False), ("ddim", False), ("dpmpp_2m", True)]
NEGATIVES = [None, "a blue square"]
PROMPTS = ["a red circle", "a big yellow star"]
ONE_THREAD = True  # tiny networks: run this module on one CPU thread (tests/conftest.py)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def sd(tiny):
    return StableDiffusion.from_pretrained(tiny.path)


@pytest.fixture(scope="module")
def sd_inpaint(tiny):
    return StableDiffusion.from_pretrained(tiny.inpaint_path)


@pytest.fixture(scope="module")
def sd_half(tiny):
    return StableDiffusion.from_pretrained(tiny.path, dtype=HALF)


def picture(width, height, seed=0):
    """A smooth random RGB picture (bilinearly upsampled noise), so the VAE sees structure, not just noise."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, height // 8, width // 8, generator=g)
    big = torch.nn.functional.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    return Image.fromarray((big[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def rectangle_mask(width, height, box):
    """White (repaint) inside box = (left, top, right, bottom), black elsewhere."""
    mask = np.zeros((height, width), dtype=np.uint8)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = 255
    return Image.fromarray(mask)


def generator(seed=0):
    return torch.Generator("cpu").manual_seed(seed)


def generators(*seeds):
    """One CPU generator per picture."""
    return [generator(s) for s in seeds]


def assert_close(ours, expected, tol=TOL):
    assert ours.shape == expected.shape
    assert ours.dtype == torch.float32
    expected = expected.float()
    assert ((expected > 0) & (expected < 1)).float().mean() > 0.5, "reference images are mostly clamped"
    assert expected.std() > 0.05, "reference images are nearly constant"
    error = ((ours - expected).abs().max() / expected.abs().max()).item()
    assert error <= tol, f"max relative error {error:.3g} > {tol}"


@pytest.mark.parametrize("sampler,karras", SAMPLERS)
@pytest.mark.parametrize("negative", NEGATIVES)
def test_text_to_image_matches_diffusers(tiny, sd, sampler, karras, negative):
    reference = tiny.reference("text_to_image", sampler, karras)
    settings = dict(guidance_scale=7.5, width=64, height=32, num_images_per_prompt=2)
    expected = reference(PROMPTS, negative_prompt=negative and [negative] * 2, num_inference_steps=5,
                         generator=generator(), output_type="pt", **settings).images
    ours = sd.text_to_image(PROMPTS, negative_prompt=negative, steps=5, sampler=sampler, karras=karras, seed=0,
                            progress=False, **settings)
    assert_close(ours.images, expected)


@pytest.mark.parametrize("sampler,karras", SAMPLERS)
@pytest.mark.parametrize("negative", NEGATIVES)
def test_image_to_image_matches_diffusers(tiny, sd, sampler, karras, negative):
    reference = tiny.reference("image_to_image", sampler, karras)
    image = picture(32, 48)
    expected = reference("a red circle", image=image, strength=0.7, negative_prompt=negative, num_inference_steps=6,
                         num_images_per_prompt=2, generator=generator(1), output_type="pt").images
    ours = sd.image_to_image("a red circle", image, strength=0.7, negative_prompt=negative, steps=6, sampler=sampler,
                             karras=karras, num_images_per_prompt=2, seed=1, progress=False)
    assert_close(ours.images, expected)


@pytest.mark.parametrize("sampler,karras", SAMPLERS)
@pytest.mark.parametrize("negative", NEGATIVES)
@pytest.mark.parametrize("unet_channels", [4, 9])
def test_inpaint_matches_diffusers(tiny, sd, sd_inpaint, sampler, karras, negative, unet_channels):
    nine = unet_channels == 9
    reference = tiny.reference("inpaint", sampler, karras, inpaint_unet=nine)
    image, mask = picture(48, 32, seed=2), rectangle_mask(48, 32, (8, 4, 40, 20))
    strength = 1.0 if negative is None else 0.8  # both starts: pure noise, and the noised picture
    expected = reference(PROMPTS, image=image, mask_image=mask, width=48, height=32, strength=strength,
                         negative_prompt=negative and [negative] * 2, num_inference_steps=5,
                         generator=generator(2), output_type="pt").images
    ours = (sd_inpaint if nine else sd).inpaint(PROMPTS, image, mask, strength=strength, negative_prompt=negative,
                                                steps=5, sampler=sampler, karras=karras, seed=2, progress=False)
    assert_close(ours.images, expected)


# A picture given as a tensor keeps its layout (contiguous here), as in diffusers; a PIL picture becomes
# channels-last on both sides. The VAE's convolutions round by layout on some CPUs (AVX-512 ones among them),
# so only equal layouts give equal numbers there.
@pytest.mark.parametrize("task", ["image_to_image", "inpaint"])
def test_a_tensor_picture_gives_diffusers_numbers(tiny, sd, sd_inpaint, task):
    image = torch.from_numpy(np.asarray(picture(32, 32, seed=4), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    image = image.contiguous()  # (1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 16:] = 1
    options = dict(image=image, num_inference_steps=3, generator=generator(5), output_type="pt")
    if task == "inpaint":
        expected = tiny.reference("inpaint", "ddim", inpaint_unet=True)("a red circle", mask_image=mask, width=32,
                                                                          height=32, **options).images
        ours = sd_inpaint.inpaint("a red circle", image, mask, steps=3, sampler="ddim", seed=5, progress=False)
    else:
        expected = tiny.reference("image_to_image", "ddim")("a red circle", strength=0.7, **options).images
        ours = sd.image_to_image("a red circle", image, strength=0.7, steps=3, sampler="ddim", seed=5, progress=False)
    assert_close(ours.images, expected)
    assert torch.equal(ours.images, expected)  # the same operations on the same layouts: the same bits


@pytest.mark.parametrize("sampler,karras", SAMPLERS)
@pytest.mark.parametrize("negative", NEGATIVES)
def test_controlnet_matches_diffusers(tiny, sd, sampler, karras, negative):
    reference = tiny.reference("control", sampler, karras)
    edges = rectangle_mask(32, 40, (4, 8, 28, 30)).convert("RGB")
    window = dict(guidance_start=0.2, guidance_end=0.8)  # 5 steps: the ControlNet acts on calls 1, 2 and 3 only
    expected = reference("a red circle", image=edges, negative_prompt=negative, num_inference_steps=5,
                         controlnet_conditioning_scale=0.8, control_guidance_start=0.2, control_guidance_end=0.8,
                         generator=generator(3), output_type="pt").images
    ours = sd.control("a red circle", edges, controlnet_scale=0.8, negative_prompt=negative, steps=5,
                      sampler=sampler, karras=karras, seed=3, progress=False, **window)
    assert_close(ours.images, expected)
    without = sd.control("a red circle", edges, controlnet_scale=0.0, negative_prompt=negative, steps=5,
                         sampler=sampler, karras=karras, seed=3, progress=False, **window)
    assert (without.images - ours.images).abs().max() > 1e-3, "the ControlNet changed nothing"


def test_outpaint_is_diffusers_inpainting_of_the_padded_canvas(tiny, sd_inpaint):
    image = picture(32, 32, seed=4)
    canvas = Image.fromarray(np.pad(np.asarray(image), ((8, 0), (16, 0), (0, 0)), mode="edge"))  # left 16, top 8
    mask = Image.fromarray(np.pad(np.zeros((32, 32), np.uint8), ((8, 0), (16, 0)), constant_values=255))
    reference = tiny.reference("inpaint", "euler", inpaint_unet=True)
    expected = reference("a red circle", image=canvas, mask_image=mask, width=48, height=40, num_inference_steps=4,
                         generator=generator(4), output_type="pt").images
    ours = sd_inpaint.outpaint("a red circle", image, left=16, top=8, steps=4, seed=4, progress=False)
    assert_close(ours.images, expected)


# ---------------------------------------------------------------------------------------------------------------
# A generator per picture: each picture's random numbers come from its own generator, as in diffusers


def test_text_to_image_with_a_generator_per_picture_matches_diffusers(tiny, sd):
    reference = tiny.reference("text_to_image", "euler_a")  # fresh noise at every step, drawn per generator
    settings = dict(num_inference_steps=4, width=32, height=32, output_type="pt")
    expected = reference(PROMPTS, generator=generators(10, 11), **settings).images
    ours = sd.text_to_image(PROMPTS, steps=4, sampler="euler_a", width=32, height=32, generator=generators(10, 11),
                            progress=False)
    assert_close(ours.images, expected)


def test_image_to_image_with_a_generator_per_picture_matches_diffusers(tiny, sd):
    """diffusers' img2img encodes the picture once per generator: each picture has its own VAE sample."""
    reference = tiny.reference("image_to_image", "euler_a")
    image = picture(32, 32, seed=5)
    expected = reference("a red circle", image=image, strength=0.7, num_inference_steps=5, num_images_per_prompt=2,
                         generator=generators(12, 13), output_type="pt").images
    ours = sd.image_to_image("a red circle", image, strength=0.7, steps=5, sampler="euler_a",
                             num_images_per_prompt=2, generator=generators(12, 13), progress=False)
    assert_close(ours.images, expected)


@pytest.mark.parametrize("unet_channels", [4, 9])
def test_inpaint_with_a_generator_per_picture_matches_diffusers(tiny, sd, sd_inpaint, unet_channels):
    """strength < 1 makes both kinds of U-Net encode the picture (diffusers: with the first generator)."""
    nine = unet_channels == 9
    reference = tiny.reference("inpaint", "euler_a", inpaint_unet=nine)
    image, mask = picture(32, 32, seed=6), rectangle_mask(32, 32, (8, 8, 24, 24))
    expected = reference(PROMPTS, image=image, mask_image=mask, width=32, height=32, strength=0.8,
                         num_inference_steps=5, generator=generators(14, 15), output_type="pt").images
    ours = (sd_inpaint if nine else sd).inpaint(PROMPTS, image, mask, strength=0.8, steps=5, sampler="euler_a",
                                                generator=generators(14, 15), progress=False)
    assert_close(ours.images, expected)


def test_outpaint_with_a_generator_per_picture_is_diffusers_inpainting_of_the_padded_canvas(tiny, sd_inpaint):
    image = picture(32, 24, seed=7)
    canvas = Image.fromarray(np.pad(np.asarray(image), ((0, 8), (0, 0), (0, 0)), mode="edge"))  # bottom 8
    mask = Image.fromarray(np.pad(np.zeros((24, 32), np.uint8), ((0, 8), (0, 0)), constant_values=255))
    reference = tiny.reference("inpaint", "euler_a", inpaint_unet=True)
    expected = reference("a red circle", image=canvas, mask_image=mask, width=32, height=32, num_inference_steps=4,
                         num_images_per_prompt=2, generator=generators(16, 17), output_type="pt").images
    ours = sd_inpaint.outpaint("a red circle", image, bottom=8, steps=4, sampler="euler_a", num_images_per_prompt=2,
                               generator=generators(16, 17), progress=False)
    assert_close(ours.images, expected)


def test_control_with_a_generator_per_picture_matches_diffusers(tiny, sd):
    reference = tiny.reference("control", "euler_a")
    edges = rectangle_mask(32, 32, (4, 8, 28, 30)).convert("RGB")
    expected = reference("a red circle", image=edges, num_inference_steps=4, num_images_per_prompt=2,
                         generator=generators(18, 19), output_type="pt").images
    ours = sd.control("a red circle", edges, steps=4, sampler="euler_a", num_images_per_prompt=2,
                      generator=generators(18, 19), progress=False)
    assert_close(ours.images, expected)


@pytest.mark.parametrize("task", ["text_to_image", "image_to_image"])
def test_a_picture_made_with_its_own_generator_does_not_depend_on_the_batch(sd, task):
    inputs = dict(width=32, height=32) if task == "text_to_image" else dict(image=picture(32, 32), strength=0.8)

    def make(*seeds):
        return getattr(sd, task)("a red circle", num_images_per_prompt=len(seeds), generator=generators(*seeds),
                                 steps=3, sampler="euler_a", progress=False, **inputs)

    pair, alone = make(20, 21), make(21)
    assert (pair.images[0] - pair.images[1]).abs().max() > 1e-3
    torch.testing.assert_close(pair.images[1:], alone.images, rtol=0, atol=TOL)


def test_a_list_of_generators_of_another_length_than_the_batch_is_an_error(sd):
    with pytest.raises(ValueError, match="got 3 generators for 2 pictures; pass one generator per picture"):
        sd.text_to_image(PROMPTS, steps=2, width=32, height=32, generator=generators(1, 2, 3), progress=False)


# ---------------------------------------------------------------------------------------------------------------
# Half precision: the latents stay in the U-Net's dtype and every step takes diffusers' float16 arithmetic


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler", "euler_a", "heun", "lms", "dpmpp_2m"])
def test_text_to_image_matches_diffusers_in_float16(tiny, sd_half, sampler):
    reference = tiny.reference("text_to_image", sampler, dtype=HALF)
    settings = dict(guidance_scale=7.5, width=64, height=32, num_images_per_prompt=2)
    expected = reference(PROMPTS, num_inference_steps=5, generator=generator(), output_type="pt", **settings).images
    assert expected.dtype == HALF
    ours = sd_half.text_to_image(PROMPTS, steps=5, sampler=sampler, seed=0, progress=False, **settings)
    assert_close(ours.images, expected, HALF_TOL)


# img2img's latents are laid out channels-last (the encoder's output for a PIL picture, as in diffusers), and the
# float16 roundings of a U-Net depend on the layout: this pins that minidiff's transformer blocks hand their output
# on in the layout diffusers' do.
@pytest.mark.parametrize("sampler,karras", SAMPLERS)
def test_image_to_image_matches_diffusers_in_float16(tiny, sd_half, sampler, karras):
    reference = tiny.reference("image_to_image", sampler, karras, dtype=HALF)
    image = picture(32, 48)
    expected = reference("a red circle", image=image, strength=0.7, num_inference_steps=6, num_images_per_prompt=2,
                         generator=generator(1), output_type="pt").images
    ours = sd_half.image_to_image("a red circle", image, strength=0.7, steps=6, sampler=sampler, karras=karras,
                                  num_images_per_prompt=2, seed=1, progress=False)
    assert_close(ours.images, expected, HALF_TOL)


@pytest.mark.parametrize("unet_channels", [4, 9])
def test_inpaint_matches_diffusers_in_float16(tiny, sd_half, unet_channels):
    nine = unet_channels == 9
    reference = tiny.reference("inpaint", "euler", inpaint_unet=nine, dtype=HALF)
    image, mask = picture(48, 32, seed=2), rectangle_mask(48, 32, (8, 4, 40, 20))
    expected = reference("a red circle", image=image, mask_image=mask, width=48, height=32, strength=0.8,
                         num_inference_steps=5, generator=generator(2), output_type="pt").images
    model = StableDiffusion.from_pretrained(tiny.inpaint_path, dtype=HALF) if nine else sd_half
    ours = model.inpaint("a red circle", image, mask, strength=0.8, steps=5, seed=2, progress=False)
    assert_close(ours.images, expected, HALF_TOL)


# ---------------------------------------------------------------------------------------------------------------
# The VAE's precision: diffusers' SD pipelines ignore force_upcast, its SDXL pipelines follow it


def vae_input_dtypes(model, run):
    """The dtypes the VAE's encoder and decoder computed in during run()."""
    seen = {}

    def record(name):
        def hook(module, args):
            seen.setdefault(name, args[0].dtype)
        return hook

    hooks = [model.vae.encoder.conv_in.register_forward_pre_hook(record("encoder")),
             model.vae.decoder.conv_in.register_forward_pre_hook(record("decoder"))]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize("follows_force_upcast", [False, True])
def test_the_vae_runs_in_float32_only_in_a_pipeline_family_that_follows_force_upcast(sd_half, follows_force_upcast):
    """StableDiffusion, like diffusers' SD 1.x/2.x pipelines, runs a float16 VAE in float16 even though its config
    says force_upcast; a family that follows it (diffusers' SDXL pipelines) encodes and decodes in float32."""
    family = type("Family", (StableDiffusion,), {"follows_force_upcast": follows_force_upcast})
    model = family(sd_half.tokenizer, sd_half.text_encoder, sd_half.vae, sd_half.unet, sd_half.scheduler_config)
    assert model.vae.config.force_upcast
    seen = vae_input_dtypes(model, lambda: model.image_to_image("a red circle", picture(32, 32), steps=2, seed=0,
                                                                progress=False))
    expected = torch.float32 if follows_force_upcast else HALF
    assert seen == {"encoder": expected, "decoder": expected}
    assert model.vae.dtype == HALF  # given back in its own dtype


def test_clip_skip_matches_diffusers(tiny, sd):
    reference = tiny.reference("text_to_image")
    # diffusers 0.42 reads text_encoder.text_model.final_layer_norm; transformers 5 keeps the layers at the top level
    encoder = reference.text_encoder
    object.__setattr__(encoder, "text_model", SimpleNamespace(final_layer_norm=encoder.final_layer_norm))
    expected = reference("a red circle", clip_skip=1, num_inference_steps=3, width=32, height=32,
                         generator=generator(5), output_type="pt").images
    ours = sd.text_to_image("a red circle", clip_skip=1, steps=3, width=32, height=32, seed=5, progress=False)
    assert_close(ours.images, expected)
    plain = sd.text_to_image("a red circle", steps=3, width=32, height=32, seed=5, progress=False)
    assert (plain.images - ours.images).abs().max() > 1e-3


def test_same_seed_gives_bit_identical_images_and_other_seeds_differ(sd):
    run = dict(steps=3, width=32, height=32, sampler="euler_a", progress=False)
    first, again = sd.text_to_image("a red circle", seed=7, **run), sd.text_to_image("a red circle", seed=7, **run)
    assert torch.equal(first.images, again.images)
    assert (sd.text_to_image("a red circle", seed=8, **run).images - first.images).abs().max() > 1e-3


def test_a_run_without_seed_reports_the_seed_that_repeats_it(sd):
    run = dict(steps=2, width=32, height=32, progress=False)
    first = sd.text_to_image("a red circle", **run)
    assert isinstance(first.seed, int)
    assert torch.equal(sd.text_to_image("a red circle", seed=first.seed, **run).images, first.images)


def test_guidance_scale_one_runs_the_unet_on_the_prompt_batch_only(sd):
    batches = []
    hook = sd.unet.register_forward_hook(lambda module, args, out: batches.append(out.shape[0]))
    try:
        sd.text_to_image(PROMPTS, guidance_scale=1.0, steps=2, width=32, height=32, seed=0, progress=False)
        sd.text_to_image(PROMPTS, guidance_scale=2.0, steps=2, width=32, height=32, seed=0, progress=False)
    finally:
        hook.remove()
    assert batches == [2, 2, 4, 4]


def test_empty_prompt_is_unconditional_generation(sd):
    result = sd.text_to_image("", steps=2, width=32, height=32, seed=0, progress=False)
    assert result.images.shape == (1, 3, 32, 32)


def test_long_prompt_is_truncated_with_a_warning_naming_the_dropped_tokens(sd):
    prompt = "a red circle " * 30  # 90 tokens: 75 fit between the start and end tokens
    with pytest.warns(UserWarning, match="its last 15 tokens were dropped"):
        sd.text_to_image(prompt, steps=1, width=32, height=32, seed=0, progress=False)


def test_size_not_a_multiple_of_8_names_the_nearest_valid_sizes(sd):
    with pytest.raises(ValueError, match="width must be a positive multiple of 8 pixels, got 60; .* 56 or 64"):
        sd.text_to_image("a red circle", width=60, height=32, progress=False)
    with pytest.raises(ValueError, match="height .* got 4; the smallest valid height is 8"):
        sd.image_to_image("a red circle", picture(32, 32).resize((32, 4)), progress=False)


def test_zero_steps_is_an_error(sd):
    with pytest.raises(ValueError, match="steps must be an integer from 1"):
        sd.text_to_image("a red circle", steps=0, width=32, height=32, progress=False)


def test_mask_of_another_size_is_an_error(sd):
    with pytest.raises(ValueError, match="the mask is 32x24 px but the image is 32x32 px"):
        sd.inpaint("a red circle", picture(32, 32), rectangle_mask(32, 24, (0, 0, 8, 8)), progress=False)


def test_nan_in_the_latents_names_the_step_where_it_appeared(sd):
    calls = []

    def poison(module, args, out):
        calls.append(1)
        return out * float("nan") if len(calls) == 3 else out

    hook = sd.unet.register_forward_hook(poison)
    try:
        with pytest.raises(FloatingPointError, match="NaN or infinite at step 3 of 4"):
            sd.text_to_image("a red circle", steps=4, width=32, height=32, seed=0, progress=False)
    finally:
        hook.remove()


def test_trajectory_holds_every_step_and_ends_at_the_result(sd):
    result = sd.text_to_image("a red circle", steps=4, width=32, height=32, seed=0, return_trajectory=True,
                              progress=False)
    trajectory = result.trajectory
    assert len(trajectory.latents) == len(trajectory.predicted_x0) == len(trajectory.timesteps) == 4
    assert trajectory.start.shape == (1, 4, 4, 4)
    assert torch.equal(trajectory.latents[-1], result.latents)
    assert trajectory.timesteps == sorted(trajectory.timesteps, reverse=True)


def test_callback_sees_every_step_and_may_replace_the_latents(sd):
    seen = []

    def callback(i, t, x, x0):
        seen.append(i)
        return torch.zeros_like(x) if i == 1 else None

    zeroed = sd.text_to_image("a red circle", steps=3, width=32, height=32, seed=0, callback=callback, progress=False)
    assert seen == [0, 1, 2]
    plain = sd.text_to_image("a red circle", steps=3, width=32, height=32, seed=0, progress=False)
    assert (zeroed.images - plain.images).abs().max() > 1e-3


def test_to_pil_rounds_to_the_nearest_8_bit_level(sd):
    result = sd.text_to_image("a red circle", steps=2, width=32, height=24, seed=0, num_images_per_prompt=2,
                              progress=False)
    pictures = result.to_pil()
    assert len(pictures) == 2 and pictures[0].size == (32, 24)
    expected = (result.images[1].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(np.asarray(pictures[1]), expected)


def test_tasks_that_need_other_networks_say_so(sd, sd_inpaint):
    with pytest.raises(ValueError, match="inpainting model.*use inpaint or outpaint"):
        sd_inpaint.text_to_image("a red circle", width=32, height=32, progress=False)
    with pytest.raises(ValueError, match="no ControlNet"):
        sd_inpaint.control("a red circle", picture(32, 32), progress=False)


@pytest.mark.parametrize("pads,message", [
    (dict(), "not all 0"),
    (dict(left=-8), ">= 0"),
    (dict(left=4), "width would be 36 px, not a multiple of 8: add 4"),
])
def test_outpaint_rejects_bad_padding(sd_inpaint, pads, message):
    with pytest.raises(ValueError, match=message):
        sd_inpaint.outpaint("a red circle", picture(32, 32), progress=False, **pads)
