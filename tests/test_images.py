"""minidiff.images: PIL <-> tensor conversions as diffusers' image processor does them, masks, and safe PNG saving."""

import numpy as np
import pytest
import torch
from PIL import Image

from minidiff.images import (
    as_image_tensor,
    as_mask_tensor,
    load_image,
    load_mask,
    pil_to_tensor,
    save_png,
    tensor_to_pil,
)


def random_picture(width=24, height=16, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_pil_to_tensor_equals_diffusers_image_processor():
    from diffusers.image_processor import VaeImageProcessor

    picture = random_picture()
    expected = VaeImageProcessor(do_normalize=False).preprocess(picture)  # (1, 3, H, W) in [0, 1]
    assert torch.equal(pil_to_tensor(picture), expected)
    assert pil_to_tensor(picture).stride() == expected.stride()  # the layout too: kernels round by it


def test_tensor_to_pil_rounds_like_diffusers_and_round_trips_8_bit_pictures():
    from diffusers.image_processor import VaeImageProcessor

    images = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    expected = VaeImageProcessor.numpy_to_pil(images.permute(0, 2, 3, 1).numpy())
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(tensor_to_pil(images), expected))
    picture = random_picture()
    assert np.array_equal(np.asarray(tensor_to_pil(pil_to_tensor(picture))[0]), np.asarray(picture))


def test_mask_is_binarised_at_one_half_like_diffusers():
    from diffusers.image_processor import VaeImageProcessor

    mask = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    expected = VaeImageProcessor(do_normalize=False, do_binarize=True, do_convert_grayscale=True).preprocess(mask)
    assert torch.equal(as_mask_tensor(mask), expected)
    assert torch.equal(as_mask_tensor(torch.tensor([[0.2, 0.5], [0.7, 0.49]])), torch.tensor([[[[0.0, 1], [1, 0]]]]))


def test_image_tensors_must_be_one_picture_in_0_1():
    assert as_image_tensor(torch.rand(1, 8, 8), channels=3).shape == (1, 3, 8, 8)  # a grey edge map -> RGB
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\].*\(x \+ 1\) / 2"):
        as_image_tensor(torch.rand(3, 8, 8) * 2 - 1)
    with pytest.raises(ValueError, match="call the pipeline once per image"):
        as_image_tensor(torch.rand(2, 3, 8, 8))
    with pytest.raises(TypeError, match="PIL image or a torch tensor"):
        as_image_tensor(np.zeros((8, 8, 3)))


def test_load_image_resizes_and_explains_missing_or_unreadable_files(tmp_path):
    random_picture(24, 16).save(tmp_path / "in.png")
    assert load_image(tmp_path / "in.png", size=(12, 8)).size == (12, 8)
    assert load_mask(tmp_path / "in.png").mode == "L"
    with pytest.raises(FileNotFoundError, match="no image file at"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(ValueError, match="could not read .* as an image"):
        load_image(tmp_path / "text.png")


def test_save_png_creates_folders_and_replaces_atomically(tmp_path):
    path = tmp_path / "a" / "b" / "out.png"
    save_png(random_picture(seed=1), path)
    save_png(random_picture(seed=2), path)
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(random_picture(seed=2)))
    assert [p.name for p in path.parent.iterdir()] == ["out.png"]


def test_an_interrupted_save_leaves_neither_the_file_nor_a_temporary(tmp_path, monkeypatch):
    def interrupted_save(self, f, *args, **kwargs):
        f.write(b"\x89PNG half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_png(random_picture(), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []
