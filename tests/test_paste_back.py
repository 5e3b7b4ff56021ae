"""Paste-back (minidiff/pipelines/paste_back.py): out = m̃ · generated + (1 − m̃) · original, and the inpaint and
outpaint commands, which paste back by default and not with --no-paste-back (the Python API never does)."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import model, picture, run  # noqa: F401 (the CLI tests' fixtures)
from tiny_pipeline import tiny_model

from minidiff import cli
from minidiff.images import as_image_tensor, tensor_to_pil
from minidiff.pipelines import StableDiffusion
from minidiff.pipelines.paste_back import FEATHER_RADIUS, feathered_mask, paste_back, paste_back_outpainting

FAST = ["--steps", "2", "--seed", "0"]
ONE_THREAD = True  # tiny networks: one CPU thread (tests/conftest.py)
REACH = 2 * FEATHER_RADIUS  # the farthest pixel from the hole that the generated picture still touches


def rectangle_mask(height=40, width=48, top=12, bottom=28, left=20, right=36):
    mask = torch.zeros(1, 1, height, width)
    mask[..., top:bottom, left:right] = 1
    return mask


def distance_to_hole(mask):
    """Chebyshev distance in pixels from each pixel to the nearest hole pixel (0 in the hole), (H, W)."""
    ys, xs = torch.nonzero(mask[0, 0], as_tuple=True)
    grid_y, grid_x = torch.meshgrid(torch.arange(mask.shape[-2]), torch.arange(mask.shape[-1]), indexing="ij")
    d = torch.maximum((grid_y[..., None] - ys).abs(), (grid_x[..., None] - xs).abs())  # (H, W, holes)
    return d.min(-1).values


def test_kept_pixels_far_from_the_mask_equal_the_original_and_the_hole_equals_the_generated_picture():
    torch.manual_seed(0)
    generated, original, mask = torch.rand(2, 3, 40, 48), torch.rand(1, 3, 40, 48), rectangle_mask()
    out = paste_back(generated, original, mask)
    d = distance_to_hole(mask)
    assert torch.equal(out[..., d > REACH], original[..., d > REACH].expand(2, -1, -1))
    assert torch.equal(out[..., d == 0], generated[..., d == 0])
    seam = (d > 0) & (d <= REACH)
    assert not torch.equal(out[..., seam], original[..., seam].expand(2, -1, -1))


def test_the_feather_falls_monotonically_from_the_hole_to_the_kept_region():
    m = feathered_mask(rectangle_mask())[0, 0]  # (40, 48)
    row = m[20, 35:]  # from the hole's last column to the right, across the seam
    assert row[0] == 1 and row[REACH + 1 :].eq(0).all()
    assert (row[1:] <= row[:-1]).all() and ((row[1 : REACH + 1] > 0) & (row[1 : REACH + 1] < 1)).all()
    column = m[:13, 28].flip(0)  # from the hole's top row upwards
    assert (column[1:] <= column[:-1]).all() and column[0] == 1 and column[1] < 1 and column[-1] == 0


def test_a_hole_on_the_pictures_border_is_generated_up_to_the_border():
    generated, original = torch.rand(1, 3, 16, 24), torch.rand(1, 3, 16, 16)
    out = paste_back_outpainting(generated, original, right=8)
    assert torch.equal(out[..., 16:], generated[..., 16:])
    assert torch.equal(out[..., : 16 - REACH - 1], original[..., : 16 - REACH - 1])


def pixels(path):
    return np.asarray(Image.open(path)).astype(int)


def test_inpaint_pastes_the_kept_pixels_back_by_default_and_not_with_no_paste_back(model, picture, tmp_path, capsys):
    image, mask = picture
    for flags, name in (([], "pasted.png"), (["--no-paste-back"], "raw.png")):
        code, _, err = run(["inpaint", "a red circle", "--model", model, "--image", image, "--mask", mask,
                            "--out", tmp_path / name, *flags, *FAST], capsys)
        assert code == 0, err
    original, pasted, raw = pixels(image), pixels(tmp_path / "pasted.png"), pixels(tmp_path / "raw.png")
    kept = slice(0, 16 - REACH - 1)  # columns farther than the seam from the hole (x >= 16)
    assert np.array_equal(pasted[:, kept], original[:, kept])
    assert np.array_equal(pasted[:, 16:], raw[:, 16:])
    assert not np.array_equal(raw[:, kept], original[:, kept])  # the pipeline alone redraws the kept part
    expected = StableDiffusion.from_pretrained(model).inpaint(
        "a red circle", Image.open(image), Image.open(mask), steps=2, seed=0, sampler="pndm",  # the folder's
        progress=False).to_pil()[0]
    assert np.array_equal(raw, np.asarray(expected))  # --no-paste-back: the Python API's pixels, as diffusers'


def test_mask_box_repaints_the_same_rectangle_as_a_mask_picture(model, picture, tmp_path, capsys):
    image, mask = picture
    for where, name in ((["--mask", mask], "file.png"), (["--mask-box", "16,0,32,24"], "box.png")):
        code, _, err = run(["inpaint", "a red circle", "--model", model, "--image", image, *where,
                            "--out", tmp_path / name, *FAST], capsys)
        assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "file.png"), pixels(tmp_path / "box.png"))


def test_outpaint_pastes_the_original_back_and_paints_the_new_border(model, picture, tmp_path, capsys):
    image, _ = picture
    code, _, err = run(["outpaint", "a red circle", "--model", model, "--image", image, "--right", 8, "--top", 8,
                        "--out", tmp_path / "wide.png", *FAST], capsys)
    assert code == 0, err
    out, original = pixels(tmp_path / "wide.png"), pixels(image)  # (32, 40, 3), (24, 32, 3)
    assert np.array_equal(out[8 + REACH + 1 :, : 32 - REACH - 1], original[REACH + 1 :, : 32 - REACH - 1])
    generated = StableDiffusion.from_pretrained(model).outpaint(
        "a red circle", Image.open(image), right=8, top=8, steps=2, seed=0, sampler="pndm", progress=False).images
    expected = np.asarray(tensor_to_pil(paste_back_outpainting(generated, as_image_tensor(Image.open(image)),
                                                               right=8, top=8))[0])
    assert np.array_equal(out, expected) and np.array_equal(out[:8], np.asarray(tensor_to_pil(generated)[0])[:8])


@pytest.mark.parametrize("argv, message", [
    (["inpaint", "x", "--image", "IMAGE", "--mask", "BLACK"],
     "is all black (no pixel of 50% grey or brighter), so there is nothing to repaint"),
    (["inpaint", "x", "--image", "IMAGE", "--mask-box", "20,0,10,24"],
     "--mask-box 20,0,10,24 is not a rectangle inside the 32x24 px picture"),
    (["inpaint", "x", "--image", "IMAGE", "--mask-box", "1,2,3"], "--mask-box takes four whole numbers"),
    (["outpaint", "x", "--image", "IMAGE", "--left", -8, "--right", 16],
     "whole numbers >= 0 and not all 0, but got left -8, right 16, top 0 and bottom 0; give the sides to extend"),
    (["outpaint", "x", "--image", "IMAGE"], "but got left 0, right 0, top 0 and bottom 0"),
])
def test_nothing_to_repaint_and_bad_sides_are_one_sentence_errors(argv, message, model, picture, tmp_path, capsys):
    Image.new("L", (32, 24)).save(tmp_path / "black.png")
    replace = {"IMAGE": picture[0], "BLACK": tmp_path / "black.png"}
    code, stdout, err = run([replace.get(a, a) for a in argv] + ["--model", model, "--out", tmp_path / "o.png"],
                            capsys)
    error = err.splitlines()[0]
    assert code == 1 and not stdout and error.startswith("error: ") and message in error and "{" not in error, err
    assert not (tmp_path / "o.png").exists()
