"""What the image commands write (minidiff/commands/outputs.py): one seed per picture, a contact sheet on request,
and each picture's settings in A1111's ``parameters`` text, which ``python -m minidiff info`` prints back.

Every run goes through ``minidiff.cli.main`` on the tiny random model (tests/tiny_pipeline.py), 1 or 2 steps.
"""

import hashlib
import json
import re

import numpy as np
import pytest
from PIL import Image
from test_cli import picture, run  # noqa: F401 (the CLI tests' fixture and runner)
from tiny_pipeline import tiny_model

from minidiff import cli
from minidiff.commands import outputs, pipeline_options

ONE_THREAD = True  # tiny networks: run this module on one CPU thread (tests/conftest.py)


@pytest.fixture(scope="module")
def model():
    return tiny_model().path  # a Path: the hash test reads the U-Net's files in it


def generate(model, *options):
    return ["generate", "a red circle", "--model", model, "--width", 32, "--height", 24, "--steps", 2, *options]


def parse(text):
    """(prompt, negative prompt or None, {field: value}) from A1111's parameters text; quoted values unquoted."""
    *lines, last = text.split("\n")
    negative = [line.removeprefix("Negative prompt: ") for line in lines[1:] if line.startswith("Negative prompt: ")]
    pairs = re.findall(r'([^:,]+): ("(?:\\.|[^"\\])*"|[^,]*)(?:, |$)', last)
    fields = {key: json.loads(value) if value.startswith('"') else value for key, value in pairs}
    return lines[0], (negative[0] if negative else None), fields


def test_picture_k_of_a_run_is_remade_alone_by_seed_plus_k_and_is_named_by_its_seed(model, tmp_path, capsys,
                                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(generate(model, "--num", 3, "--seed", 5), capsys)
    assert code == 0 and stdout.splitlines() == [f"wrote outputs/generate-{s}.png (seed {s})" for s in (5, 6, 7)]
    for seed in (5, 6, 7):
        alone = tmp_path / f"alone-{seed}.png"
        code, stdout, _ = run(generate(model, "--num", 1, "--seed", seed, "--out", alone), capsys)
        assert code == 0 and stdout == f"wrote {alone} (seed {seed})\n"
        assert alone.read_bytes() == (tmp_path / "outputs" / f"generate-{seed}.png").read_bytes()  # pixels and text


def test_inpainting_picture_k_is_remade_alone_too_though_a_generator_list_encodes_with_the_first(
        model, picture, tmp_path, capsys):
    image, mask = picture
    inpaint = ["inpaint", "a green square", "--model", model, "--image", image, "--mask", mask, "--steps", 2,
               "--strength", 0.8]
    assert run([*inpaint, "--num", 2, "--seed", 5, "--out", tmp_path / "run.png"], capsys)[0] == 0
    assert run([*inpaint, "--seed", 6, "--out", tmp_path / "alone.png"], capsys)[0] == 0
    assert (tmp_path / "alone.png").read_bytes() == (tmp_path / "run-1.png").read_bytes()


def test_seed_minus_one_draws_a_new_seed_printed_and_reproducible_like_any_other(model, tmp_path, capsys):
    code, stdout, _ = run(generate(model, "--steps", 1, "--num", 2, "--seed", -1, "--out", tmp_path / "new.png"),
                          capsys)
    seeds = [int(s) for s in re.findall(r"\(seed (\d+)\)", stdout)]
    assert code == 0 and len(seeds) == 2 and seeds[1] == seeds[0] + 1
    assert parse(Image.open(tmp_path / "new-1.png").text["parameters"])[2]["Seed"] == str(seeds[1])
    code, _, _ = run(generate(model, "--steps", 1, "--seed", seeds[1], "--out", tmp_path / "again.png"), capsys)
    assert code == 0 and (tmp_path / "again.png").read_bytes() == (tmp_path / "new-1.png").read_bytes()


@pytest.mark.parametrize("seed, num, message", [
    (-2, 1, "--seed must be a whole number from 0, or -1 for a new random seed; got -2"),
    (2**64 - 1, 2, "passes the largest seed torch takes (2**64 - 1); give a seed of at most 18446744073709551614"),
])
def test_a_seed_torch_cannot_take_is_refused_in_one_line_before_the_model_loads(seed, num, message, tmp_path, capsys,
                                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run(generate(tmp_path / "no-model-here", "--seed", seed, "--num", num), capsys)
    error, *_ = err.splitlines()
    assert code == 1 and error.startswith("error: ") and message in error, err
    assert not stdout and not (tmp_path / "outputs").exists()


def test_ctrl_c_during_a_later_picture_leaves_no_file(model, tmp_path, capsys, monkeypatch):
    pictures_started = []

    def interrupt(i, t, x, x0):
        if i == 0:
            pictures_started.append(i)
        if len(pictures_started) == 2:  # the second picture's first step
            raise KeyboardInterrupt

    plain = pipeline_options.sampling_options
    monkeypatch.setattr(pipeline_options, "sampling_options", lambda args: {**plain(args), "callback": interrupt})
    code, _, _ = run(generate(model, "--num", 2, "--out", tmp_path / "out" / "never.png"), capsys)
    assert code == 130 and not (tmp_path / "out").exists()


def test_grid_writes_a_near_square_contact_sheet_of_the_run_beside_the_pictures(model, tmp_path, capsys):
    code, stdout, _ = run(generate(model, "--steps", 1, "--num", 3, "--seed", 0, "--grid", "--out",
                                   tmp_path / "run.png"), capsys)
    grid = tmp_path / "run-grid.png"
    assert code == 0 and f"wrote {grid}" in stdout.splitlines()[-1]
    sheet = np.asarray(Image.open(grid))
    cell = 24 + outputs.CAPTION_HEIGHT  # a picture and its caption
    assert sheet.shape == (2 * cell, 2 * 32, 3)  # 3 pictures: 2 columns, 2 rows
    for k, (row, column) in enumerate([(0, 0), (0, 1), (1, 0)]):
        placed = sheet[row * cell : row * cell + 24, column * 32 : (column + 1) * 32]
        assert np.array_equal(placed, np.asarray(Image.open(tmp_path / f"run-{k}.png")))
        assert (sheet[row * cell + 24 : (row + 1) * cell, column * 32 : (column + 1) * 32] < 128).any()  # caption
    assert (sheet[cell:, 32:] == 255).all()  # the empty fourth cell


def test_every_picture_carries_its_settings_and_info_prints_them_back(model, tmp_path, capsys):
    out = tmp_path / "cat.png"
    code, _, _ = run(generate(model, "--negative", "blue, blurry", "--sampler", "dpmpp_2m", "--karras", "--cfg", 7.5,
                              "--clip-skip", 1, "--seed", 3, "--out", out), capsys)
    assert code == 0
    code, stdout, _ = run(["info", out], capsys)
    assert code == 0 and stdout == Image.open(out).text["parameters"] + "\n"
    unet_hash = hashlib.sha256((model / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()
    assert parse(stdout.rstrip("\n")) == ("a red circle", "blue, blurry", {
        "Steps": "2", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "7.5", "Seed": "3",
        "Size": "32x24", "Model hash": unet_hash[:10], "Model": "tiny-sd", "Clip skip": "2"})


@pytest.mark.parametrize("command, options, field, value", [
    ("img2img", ["--strength", 0.8], "Denoising strength", "0.8"),
    ("control", ["--control-scale", 0.5], "ControlNet 0",
     "Module: canny, Weight: 0.5, Threshold A: 100, Threshold B: 200, Guidance Start: 0, Guidance End: 1"),
])
def test_picture_commands_add_their_own_fields(command, options, field, value, model, picture, tmp_path, capsys):
    out = tmp_path / "out.png"
    code, _, err = run([command, "a star", "--model", model, "--image", picture[0], "--steps", 2, "--sampler", "euler",
                        "--seed", 1, *options, "--out", out], capsys)
    assert code == 0, err
    prompt, negative, fields = parse(Image.open(out).text["parameters"])
    assert (prompt, negative, fields["Sampler"], fields[field]) == ("a star", None, "Euler", value)
    assert "Schedule type" not in fields


def test_values_with_commas_colons_or_line_breaks_are_json_strings_as_a1111_writes_them():
    text = outputs.parameters_text("a cat", "", {"Steps": 20, "CFG scale": 5.0, "Model": "my, model: v2"})
    assert text == 'a cat\nSteps: 20, CFG scale: 5, Model: "my, model: v2"'


def test_the_model_hash_is_a1111s_short_hash_of_the_checkpoint_or_the_unets_weights(tmp_path):
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"weights")
    assert outputs.model_hash(single, allow_pickle=False) == hashlib.sha256(b"weights").hexdigest()[:10]
    unet = tmp_path / "sharded" / "unet"
    unet.mkdir(parents=True)
    shards = [f"diffusion_pytorch_model-0000{k}-of-00002.safetensors" for k in (1, 2)]
    for name, data in zip(shards, (b"first", b"second")):
        (unet / name).write_bytes(data)
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"b": shards[1], "a": shards[0], "c": shards[1]}}))
    assert outputs.model_hash(unet.parent, allow_pickle=False) == hashlib.sha256(b"firstsecond").hexdigest()[:10]


def test_info_explains_in_one_line_a_missing_file_a_picture_that_is_no_png_and_a_png_without_settings(
        tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    (tmp_path / "notes.png").write_text("not a picture")
    cases = {"nowhere.png": "no file at", "photo.jpg": "is a JPEG picture, not a PNG",
             "notes.png": "could not read", "plain.png": "holds no 'parameters' text"}
    for name, message in cases.items():
        code, stdout, err = run(["info", tmp_path / name], capsys)
        error, *_ = err.splitlines()
        assert code == 1 and not stdout and error.startswith("error: ") and message in error, err
