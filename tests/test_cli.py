"""The image commands of ``python -m minidiff``: generate, img2img, inpaint, outpaint, control.

Each runs through ``minidiff.cli.main`` on the tiny random model (tests/tiny_pipeline.py). A successful command
writes exactly the pixels the pipeline computes; a failing one prints one ``error:`` line, exits 1 and writes nothing.
"""

import json
import shutil

import diffusers
import numpy as np
import pytest
import tiny_pipeline
import torch
from PIL import Image
from tiny_pipeline import tiny_model

from minidiff import cli
from minidiff.commands import pipeline_options
from minidiff.pipelines import StableDiffusion
from minidiff.samplers import SAMPLER_NAMES

COMMANDS = ("generate", "img2img", "inpaint", "outpaint", "control", "verify")
FAST = ["--steps", "2", "--seed", "0"]
ONE_THREAD = True  # tiny networks: run this module on one CPU thread (tests/conftest.py)


@pytest.fixture(scope="module")
def model():
    return str(tiny_model().path)


@pytest.fixture(scope="module")
def inpaint_model():
    return str(tiny_model().inpaint_path)


@pytest.fixture
def picture(tmp_path):
    """A 32x24 PNG with a dark rectangle (so it has Canny edges), and a mask of its right half."""
    pixels = np.full((24, 32, 3), 230, np.uint8)
    pixels[6:18, 8:24] = (200, 30, 30)
    mask = np.zeros((24, 32), np.uint8)
    mask[:, 16:] = 255
    Image.fromarray(pixels).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path / "in.png", tmp_path / "mask.png"


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_writes_exactly_the_pipelines_pixels_into_a_new_folder(model, tmp_path, capsys):
    out = tmp_path / "new" / "folder" / "cat.png"
    code, stdout, _ = run(["generate", "a red circle", "--model", model, "--width", 32, "--height", 24,
                           "--negative", "blue", "--out", out, *FAST], capsys)
    assert code == 0 and f"wrote {out} (seed 0)" in stdout
    # the folder has no settings file and its scheduler file names PNDMScheduler, so generate runs pndm, as diffusers
    expected = StableDiffusion.from_pretrained(model).text_to_image(
        "a red circle", negative_prompt="blue", width=32, height=24, steps=2, seed=0, sampler="pndm",
        progress=False).to_pil()[0]
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(expected))


def test_generate_num_writes_numbered_files_and_a_default_name_holds_the_seed(model, tmp_path, capsys, monkeypatch):
    code, _, _ = run(["generate", "a red circle", "--model", model, "--width", 32, "--height", 32, "--num", 2,
                      "--out", tmp_path / "two.png", *FAST], capsys)
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["two-0.png", "two-1.png"]
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(["generate", "a red circle", "--model", model, "--width", 32, "--height", 32,
                      "--steps", 1, "--seed", 42], capsys)
    assert code == 0 and (tmp_path / "outputs" / "generate-42.png").is_file()


def test_img2img_inpaint_outpaint_and_control_write_pictures_of_the_right_size(
        model, inpaint_model, picture, tmp_path, capsys):
    image, mask = picture
    runs = {
        "img2img": (["--model", model, "--image", image, "--strength", 0.8], (32, 24)),
        "inpaint": (["--model", inpaint_model, "--image", image, "--mask", mask], (32, 24)),
        "outpaint": (["--model", inpaint_model, "--image", image, "--right", 8, "--top", 8], (40, 32)),
        "control": (["--model", model, "--image", image, "--edges-out", tmp_path / "edges.png"], (32, 24)),
    }
    for command, (options, size) in runs.items():
        out = tmp_path / f"{command}.png"
        code, _, err = run([command, "a red circle", *options, "--out", out, *FAST], capsys)
        assert code == 0, err
        assert Image.open(out).size == size
    edges = np.asarray(Image.open(tmp_path / "edges.png"))
    assert set(np.unique(edges)) == {0, 255} and edges[5:7, 9:23].any(axis=0).all()  # the rectangle's top edge


def test_control_from_an_edge_map_equals_control_from_the_picture_it_came_from(model, picture, tmp_path, capsys):
    image, _ = picture
    run(["control", "a star", "--model", model, "--image", image, "--edges-out", tmp_path / "edges.png",
         "--out", tmp_path / "a.png", *FAST], capsys)
    run(["control", "a star", "--model", model, "--control", tmp_path / "edges.png", "--out", tmp_path / "b.png",
         *FAST], capsys)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))


def test_input_pictures_are_resized_when_asked(model, picture, tmp_path, capsys):
    image, _ = picture
    code, _, _ = run(["img2img", "a star", "--model", model, "--image", image, "--width", 64,
                      "--out", tmp_path / "big.png", *FAST], capsys)
    assert code == 0 and Image.open(tmp_path / "big.png").size == (64, 48)  # the aspect ratio is kept


@pytest.mark.parametrize("argv,message", [
    (["generate", "x", "--width", 60, "--height", 32], "width must be a positive multiple of 8 pixels, got 60; "
                                                       "the nearest valid widths are 56 or 64"),
    (["generate", "x", "--steps", 0], "steps must be an integer from 1"),
    (["generate", "x", "--sampler", "euler", "--eta", 0.5], "eta applies only to the ddim sampler"),
    (["generate", "x", "--num", 0], "--num must be at least 1"),
    (["generate", "x", "--out", "picture.jpg"], "--out must name a .png file"),
    (["img2img", "x", "--image", "no/such.png"], "/no/such.png; check the path"),
    (["control", "x", "--image", "IMAGE", "--model", "INPAINT"], "this model has no ControlNet"),
])
def test_bad_inputs_give_one_error_line_exit_1_and_no_file(argv, message, model, inpaint_model, picture, tmp_path,
                                                           capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    replace = {"IMAGE": picture[0], "INPAINT": inpaint_model}
    argv = [replace.get(a, a) for a in argv]
    code, stdout, err = run([*argv, *([] if "--model" in argv else ["--model", model])], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "outputs").exists() and not stdout


def test_missing_model_and_mismatched_mask_are_one_line_errors(model, picture, tmp_path, capsys, monkeypatch):
    image, mask = picture
    code, _, err = run(["generate", "x", "--model", tmp_path / "nowhere"], capsys)
    assert code == 1 and "no such file or folder" in err.splitlines()[0]
    monkeypatch.setattr(pipeline_options, "BUNDLED_MODEL", tmp_path / "weights")
    (tmp_path / "weights").mkdir()  # there, but not exported yet
    code, _, err = run(["generate", "x"], capsys)
    assert code == 1 and "the bundled model is not in" in err.splitlines()[0] and "--model" in err
    Image.open(mask).resize((16, 24)).save(tmp_path / "small-mask.png")
    code, _, err = run(["inpaint", "x", "--model", model, "--image", image, "--mask", tmp_path / "small-mask.png",
                        "--out", tmp_path / "never.png"], capsys)
    assert code == 1 and "the mask is 16x24 px but the image is 32x24 px" in err
    assert not (tmp_path / "never.png").exists()


def test_ctrl_c_during_sampling_leaves_no_file(model, tmp_path, capsys, monkeypatch):
    def interrupt(i, t, x, x0):
        if i == 1:
            raise KeyboardInterrupt

    plain = pipeline_options.sampling_options
    monkeypatch.setattr(pipeline_options, "sampling_options", lambda args: {**plain(args), "callback": interrupt})
    code, _, err = run(["generate", "x", "--model", model, "--width", 32, "--height", 32, "--steps", 3,
                        "--out", tmp_path / "out" / "never.png"], capsys)
    assert code == 130 and "interrupted" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_truncated_prompt_warns_in_one_line(model, tmp_path, capsys):
    code, _, err = run(["generate", "a red circle " * 30, "--model", model, "--width", 32, "--height", 32,
                        "--steps", 1, "--out", tmp_path / "long.png"], capsys)
    assert code == 0
    assert "warning: the prompt 'a red circle a red circle a red circle a'... is longer than CLIP's 77-token " \
           "window: its last 15 tokens were dropped" in err


def test_sampler_choices_are_minidiffs_samplers():
    assert set(pipeline_options.SAMPLERS) == set(SAMPLER_NAMES)  # read from minidiff.sampler_names, without torch


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("argv, message", [
    (["train", "unet", "--cooldown", "100"], "give --steps as well"),
    (["train", "unet", "--decoder-only"], "vae stage only"),
])
def test_train_refuses_options_that_cannot_apply_in_one_error_line_without_a_traceback(argv, message, capsys,
                                                                                       tmp_path):
    code, stdout, err = run([*argv, "--out", tmp_path], capsys)
    error, *rest = err.splitlines()
    assert code == 1 and not stdout and error.startswith("error: ") and message in error, err
    assert rest == ["(run again with --debug for the full traceback)"], err


def test_train_import_continues_from_the_bundled_model_from_any_folder(tmp_path, capsys, monkeypatch):
    from minidiff.train import bundled

    monkeypatch.chdir(tmp_path)  # no weights/ here: the default is the bundled model, not ./weights
    read = []
    monkeypatch.setattr(bundled, "import_folder", lambda folder, out: read.append(folder) or {"vae": 7})
    code, stdout, _ = run(["train", "import", "--out", tmp_path / "runs"], capsys)
    assert code == 0 and read == [pipeline_options.BUNDLED_MODEL] and "vae at step 7" in stdout


@pytest.fixture(scope="module")
def karras_model(tmp_path_factory):
    """The tiny model (without its ControlNet) with ``use_karras_sigmas: true`` in its scheduler_config.json."""
    folder = tmp_path_factory.mktemp("karras") / "tiny-sd"
    shutil.copytree(tiny_model().path, folder, ignore=shutil.ignore_patterns("controlnet"))
    config_file = folder / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "use_karras_sigmas": True}))
    return folder


@pytest.mark.parametrize("flag, karras", [([], True), (["--no-karras"], False)], ids=["default", "no-karras"])
def test_generate_uses_the_models_karras_setting_unless_told_otherwise_as_diffusers_does(flag, karras, karras_model,
                                                                                         tmp_path, capsys):
    out = tmp_path / "picture.png"
    code, _, _ = run(["generate", "a red circle", "--model", karras_model, "--width", 32, "--height", 32,
                      "--out", out, "--steps", 3, "--seed", 0, "--sampler", "euler", *flag], capsys)  # (2 Karras σ's
    # are the plain ones)
    pipe = tiny_pipeline.reference_pipeline(karras_model, "text_to_image", "euler")  # Euler from the model's file
    if flag:
        pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=karras)
    assert code == 0 and pipe.scheduler.config.use_karras_sigmas is karras
    expected = pipe("a red circle", width=32, height=32, num_inference_steps=3, guidance_scale=7.5,
                    generator=torch.Generator().manual_seed(0), output_type="np").images[0]  # (H, W, 3) in [0, 1]
    difference = np.abs(np.asarray(Image.open(out)).astype(int) - (expected * 255).round())
    assert difference.max() <= 1  # the same 8-bit picture, up to rounding


def test_schedule_uses_the_configs_karras_setting_unless_told_otherwise(karras_model, capsys):
    for flag, karras in (([], True), (["--no-karras"], False)):
        code, stdout, _ = run(["schedule", "--sampler", "euler", "--steps", 3, "--config", karras_model / "scheduler",
                               *flag], capsys)
        assert code == 0 and f"σ spacing {'karras' if karras else 'as interpolated'}," in stdout.splitlines()[0]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_schedule_refuses_in_one_line_a_leading_schedule_that_starts_past_the_last_training_timestep(sampler, capsys):
    code, stdout, err = run(["schedule", "--sampler", sampler, "--steps", 1000], capsys)  # leading + steps_offset 1
    assert code == 1 and not stdout
    assert err.splitlines()[0].startswith("error: 1000 steps with leading spacing and steps_offset 1 start at timestep "
                                          "1000, past the last training timestep 999: use 999 steps or fewer")
    code, stdout, _ = run(["schedule", "--sampler", sampler, "--steps", 999], capsys)
    assert code == 0 and stdout.splitlines()[2].split()[:2] == ["0", "999"]  # the first call at the last timestep
