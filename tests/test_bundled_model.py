"""The bundled model in weights/ is a real Stable Diffusion folder: diffusers loads it with ``from_pretrained``
and draws the same pictures as minidiff (same seed, same sampler), with and without its ControlNet.

TOL is the max relative error max |a - b| / max |b| of the float32 images in [0, 1], before 8-bit rounding. On
the CPU the two libraries run the same float32 operations in the same order and the pictures come out bit for
bit equal; 1e-5 leaves room for kernels that sum in another order elsewhere.
"""

from pathlib import Path

import pytest
import torch
from tiny_pipeline import SCHEDULERS

from minidiff.canny import canny
from minidiff.data.shapes import render_scenes, sample_scene
from minidiff.images import tensor_to_pil
from minidiff.loading.safetensors_file import read_safetensors_header
from minidiff.pipelines import StableDiffusion

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
TOL = 1e-5
PROMPT = "a red circle above a blue square"
SETTINGS = dict(width=128, height=128, guidance_scale=5.0)


@pytest.fixture(scope="module")
def ours():
    return StableDiffusion.from_pretrained(WEIGHTS)


def reference(pipeline_class, sampler):
    import diffusers

    pipe = getattr(diffusers, pipeline_class).from_pretrained(WEIGHTS, torch_dtype=torch.float32)
    pipe.scheduler = getattr(diffusers, SCHEDULERS[sampler]).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def assert_close(ours, expected):
    assert ours.shape == expected.shape
    assert expected.std() > 0.05, "the reference picture is nearly constant: is the model trained?"
    error = ((ours - expected).abs().max() / expected.abs().max()).item()
    assert error <= TOL, f"max relative error {error:.3g} > {TOL}"


def test_the_folder_is_float16_safetensors_within_60_mb_in_files_of_16_mb():
    files = [f for f in WEIGHTS.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 60e6
    assert max(f.stat().st_size for f in files) <= 16.1e6  # export shards the U-Net: no file over 16 MB in git
    tensors = [f for f in files if f.suffix in (".safetensors", ".bin", ".ckpt", ".pt", ".pth")]
    assert tensors and all(f.suffix == ".safetensors" for f in tensors)
    for f in tensors:
        dtypes = {entry.dtype for entry in read_safetensors_header(f).tensors.values()}
        assert dtypes <= {"F16", "I64"}, f"{f}: {dtypes}"


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_a"])
def test_diffusers_text_to_image_on_the_bundled_model_matches(ours, sampler):
    expected = reference("StableDiffusionPipeline", sampler)(
        PROMPT, num_inference_steps=8, generator=torch.Generator().manual_seed(0), output_type="pt",
        **SETTINGS).images
    result = ours.text_to_image(PROMPT, steps=8, sampler=sampler, seed=0, progress=False, **SETTINGS)
    assert_close(result.images, expected)


def test_diffusers_controlnet_on_the_bundled_model_matches(ours):
    edges = tensor_to_pil(canny(render_scenes([sample_scene(5)])).float())[0].convert("RGB")  # (128, 128) edge map
    expected = reference("StableDiffusionControlNetPipeline", "dpmpp_2m")(
        "a green star", image=edges, num_inference_steps=8, generator=torch.Generator().manual_seed(1),
        output_type="pt", **SETTINGS).images
    result = ours.control("a green star", edges, steps=8, sampler="dpmpp_2m", seed=1, progress=False,
                          guidance_scale=SETTINGS["guidance_scale"])
    assert_close(result.images, expected)
