"""What minidiff writes gets the permissions a plain ``open()`` or ``os.mkdir`` would give under the umask
(0o666 & ~umask for a file, 0o777 & ~umask for a folder), although every write goes through a temporary file."""

import os
import stat

import pytest
import torch
from PIL import Image

from minidiff.images import save_png
from minidiff.loading import Components, save_components, write_safetensors
from minidiff.models.clip import CLIPTextModel
from minidiff.models.config import CLIPTextConfig, UNetConfig, VAEConfig
from minidiff.models.tokenizer import CLIPTokenizer, find_openclip_vocab, load_openclip_bpe, reduced_vocabulary
from minidiff.models.unet import UNet2DConditionModel
from minidiff.models.vae import AutoencoderKL
from minidiff.samplers import SchedulerConfig

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")


@pytest.fixture(params=[(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)], ids=["umask 022", "umask 077"])
def modes(request):
    """Set the umask for one test; yields the (file, folder) modes a plain write gives under it."""
    umask, file_mode, folder_mode = request.param
    old = os.umask(umask)
    yield file_mode, folder_mode
    os.umask(old)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def tiny_components():
    """The smallest model save_components accepts: a few thousand random weights."""
    tokenizer = CLIPTokenizer(*reduced_vocabulary(*load_openclip_bpe(find_openclip_vocab()), ["a"]))
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer.vocab), hidden_size=8, intermediate_size=16,
                                        num_hidden_layers=1, num_attention_heads=1, max_position_embeddings=8))
    vae = AutoencoderKL(VAEConfig(block_out_channels=(8,), layers_per_block=1, norm_num_groups=8,
                                  down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",)))
    unet = UNet2DConditionModel(UNetConfig(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=8,
                                           cross_attention_dim=8, attention_head_dim=2,
                                           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")))
    return Components(tokenizer, text, vae, unet, SchedulerConfig())


def test_a_saved_png_has_the_mode_of_a_plain_write(modes, tmp_path):
    path = save_png(Image.new("RGB", (4, 4)), tmp_path / "picture.png")
    assert mode(path) == modes[0]


def test_a_safetensors_file_has_the_mode_of_a_plain_write(modes, tmp_path):
    write_safetensors({"w": torch.ones(2)}, tmp_path / "w.safetensors")
    assert mode(tmp_path / "w.safetensors") == modes[0]


def test_a_saved_model_folder_and_everything_in_it_have_the_modes_of_plain_writes(modes, tmp_path):
    file_mode, folder_mode = modes
    folder = tmp_path / "model"
    save_components(tiny_components(), folder)
    inside = list(folder.rglob("*"))
    assert any(p.suffix == ".safetensors" for p in inside) and any(p.is_dir() for p in inside)
    assert mode(folder) == folder_mode
    assert {p.relative_to(folder).as_posix(): mode(p) for p in inside} == \
        {p.relative_to(folder).as_posix(): folder_mode if p.is_dir() else file_mode for p in inside}
