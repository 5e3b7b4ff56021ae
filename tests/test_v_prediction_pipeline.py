"""A whole SD 2.1-style run matches diffusers: v-prediction, zero terminal SNR, trailing spacing, upcast_attention
(which, as in diffusers' default attention processor, changes nothing), linear projections, per-block head counts,
a gelu text encoder padding with "!".

Both sides load the same tiny random model (tests/tiny_pipeline.py, ``tiny_v_model``) and run with the same seed
and sampler: every sampler that has a zero-terminal-SNR option in diffusers (its Heun and LMS schedulers have
none). Tolerances (max relative error of the [0, 1] images) as in tests/test_pipelines.py: 3e-5 in float32;
5e-4 in float16, where diffusers returns float16 images (steps of 2^-11 near 1) and minidiff float32 ones.
"""

import pytest
import torch
from test_pipelines import HALF, HALF_TOL, TOL, assert_close, generator, picture
from tiny_pipeline import tiny_v_model

from minidiff.pipelines import StableDiffusion

ZERO_SNR_SAMPLERS = ["ddpm", "ddim", "euler", "euler_a", "dpmpp_2m"]
PROMPTS = ["a red circle", "a big yellow star"]
ONE_THREAD = True  # tiny networks: run this module on one CPU thread (tests/conftest.py)


@pytest.fixture(scope="module")
def tiny():
    return tiny_v_model()


@pytest.fixture(scope="module")
def models(tiny):
    return {dtype: StableDiffusion.from_pretrained(tiny.path, dtype=dtype) for dtype in (torch.float32, HALF)}


def test_the_model_is_sd21_style(models):
    sd = models[torch.float32]
    config, unet = sd.scheduler_config, sd.unet.config
    assert (config.prediction_type, config.rescale_betas_zero_snr, config.timestep_spacing) == (
        "v_prediction", True, "trailing")
    assert unet.upcast_attention and unet.use_linear_projection and unet.attention_head_dim == (2, 4)
    assert sd.tokenizer.pad_token == "!"




@pytest.mark.parametrize("sampler", ZERO_SNR_SAMPLERS)
@pytest.mark.parametrize("dtype", [torch.float32, HALF],
                         ids=["float32", "float16"])
def test_text_to_image_matches_diffusers(tiny, models, dtype, sampler):
    reference = tiny.reference("text_to_image", sampler, dtype=dtype)
    settings = dict(guidance_scale=7.5, width=32, height=32, num_images_per_prompt=2)
    expected = reference(PROMPTS, num_inference_steps=5, generator=generator(), output_type="pt", **settings).images
    ours = models[dtype].text_to_image(PROMPTS, steps=5, sampler=sampler, seed=0, progress=False, **settings)
    assert_close(ours.images, expected, TOL if dtype == torch.float32 else HALF_TOL)


@pytest.mark.parametrize("sampler", ["ddim", "euler_a"])
def test_image_to_image_matches_diffusers_in_float32(tiny, models, sampler):
    reference = tiny.reference("image_to_image", sampler)
    image = picture(32, 32, seed=8)
    expected = reference("a red circle", image=image, strength=0.6, num_inference_steps=5, generator=generator(1),
                         output_type="pt").images
    ours = models[torch.float32].image_to_image("a red circle", image, strength=0.6, steps=5, sampler=sampler,
                                                seed=1, progress=False)
    assert_close(ours.images, expected)
