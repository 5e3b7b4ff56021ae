"""minidiff.noise.randn draws the numbers diffusers' randn_tensor draws, with its device rules, and is the one
noise function of the package (the VAE and every stochastic sampler draw through it)."""

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

import minidiff.models.vae
import minidiff.pipelines.base
import minidiff.pipelines.inpaint
import minidiff.samplers
from minidiff.noise import randn

ONE_THREAD = True  # tests/conftest.py


def generators(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_randn_draws_the_numbers_of_diffusers_randn_tensor(dtype):
    ours = randn((3, 4, 5, 6), generators(1)[0], dtype)
    expected = randn_tensor((3, 4, 5, 6), generator=generators(1)[0], dtype=dtype, device=torch.device("cpu"))
    assert ours.dtype == dtype and torch.equal(ours, expected)


def test_a_list_of_generators_draws_each_batch_element_from_its_own_generator_like_diffusers():
    ours = randn((3, 4, 5, 6), generators(1, 2, 3))
    expected = randn_tensor((3, 4, 5, 6), generator=generators(1, 2, 3), device=torch.device("cpu"))
    assert torch.equal(ours, expected)
    assert torch.equal(ours[2:], randn((1, 4, 5, 6), generators(3)))  # element 2 depends on generator 2 only


def test_a_list_whose_length_is_not_the_batch_is_an_error():
    with pytest.raises(ValueError, match="a list of 2 generators for a batch of 3; pass one generator per batch"):
        randn((3, 4), generators(1, 2))


def test_a_cpu_generator_draws_on_the_cpu_and_the_numbers_move_to_the_device():
    g, same = generators(5, 5)
    noise = randn((2, 3), g, device="meta")  # a device other than the CPU that every machine has
    assert noise.device.type == "meta"
    torch.randn((2, 3), generator=same)  # the CPU draw the function must have made
    assert torch.equal(g.get_state(), same.get_state())


def test_a_cuda_generator_cannot_draw_cpu_noise_and_says_so_in_one_line():
    cuda_generator = SimpleNamespace(device=torch.device("cuda", 0))  # stands in for torch.Generator("cuda")
    with pytest.raises(ValueError) as info:
        randn((1, 4), cuda_generator, device="cpu")
    message = str(info.value)
    assert "a cuda generator cannot draw noise for the cpu device" in message and "\n" not in message


def test_the_noise_module_is_at_the_bottom_of_the_package():
    """It imports nothing of minidiff, so models/ and samplers/ use it without importing upwards."""
    tree = ast.parse(Path(minidiff.noise.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert imported == ["torch"]


def test_the_vae_samplers_and_pipelines_draw_with_the_one_noise_function():
    import minidiff.samplers.ddim
    import minidiff.samplers.ddpm
    import minidiff.samplers.euler_ancestral

    users = [minidiff.models.vae, minidiff.samplers, minidiff.samplers.ddpm, minidiff.samplers.ddim,
             minidiff.samplers.euler_ancestral, minidiff.pipelines.base, minidiff.pipelines.inpaint]
    assert all(module.randn is randn for module in users)
