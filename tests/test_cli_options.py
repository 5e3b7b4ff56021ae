"""The image commands' options: a model folder's minidiff_settings.json, the options refused before a run, the
warnings a run goes on after, one-line argparse and device errors, and --help showing every default.

Most tests stop at the parser or at the option plumbing of minidiff/commands/pipeline_options.py; the few that
run a command use the tiny random model (tests/tiny_pipeline.py) for 1-2 steps at 32 px.
"""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_pipeline import tiny_model

from minidiff import cli
from minidiff.commands import model_settings, pipeline_options
from minidiff.pipelines import StableDiffusion

ROOT = Path(__file__).resolve().parents[1]
IMAGE_COMMANDS = ("generate", "img2img", "inpaint", "outpaint", "control")
ONE_THREAD = True  # tiny networks: run this module on one CPU thread (tests/conftest.py)


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def parse(argv):
    return cli.build_parser().parse_args([str(a) for a in argv])


def with_settings(folder, **values):
    (Path(folder) / model_settings.SETTINGS_FILE).write_text(json.dumps(values))
    return folder


@pytest.fixture(scope="module")
def tiny_with_settings(tmp_path_factory):
    """The tiny model with a settings file: DDIM, 2 steps, guidance 3, trained at 32x24, lms from 30 steps."""
    folder = tmp_path_factory.mktemp("settings") / "tiny-sd"
    shutil.copytree(tiny_model().path, folder)
    return with_settings(folder, sampler="ddim", steps=2, cfg=3, width=32, height=24, min_steps={"lms": 30},
                         vocabulary="shapes")


def test_a_models_settings_file_gives_the_defaults_and_the_command_line_wins(tiny_with_settings):
    args = parse(["generate", "x", "--model", tiny_with_settings])
    assert pipeline_options.chosen(args) == ("ddim", 2, 3)
    assert pipeline_options.output_size(args) == (32, 24)
    args = parse(["generate", "x", "--model", tiny_with_settings, "--sampler", "euler", "--steps", 7, "--cfg", 1,
                  "--width", 32, "--height", 24])
    assert pipeline_options.chosen(args) == ("euler", 7, 1)


def test_a_folder_without_a_settings_file_gets_stable_diffusions_usual_settings():
    args = parse(["generate", "x", "--model", tiny_model().path])  # its scheduler file names PNDMScheduler, as SD 1.5's
    assert pipeline_options.chosen(args) == ("pndm", 25, 7.5) and pipeline_options.output_size(args) == (None, None)


def test_the_bundled_model_named_by_its_path_or_a_copy_gets_the_same_settings_as_without_model(tmp_path):
    shutil.copytree(ROOT / "weights", tmp_path / "copy", ignore=shutil.ignore_patterns("*.safetensors", "*.png"))
    runs = [["generate", "a red circle"], ["generate", "a red circle", "--model", ROOT / "weights"],
            ["generate", "a red circle", "--model", tmp_path / "copy"]]
    options = [(pipeline_options.chosen(parse(argv)), pipeline_options.output_size(parse(argv))) for argv in runs]
    assert options == [(("euler_a", 20, 5.0), (128, 128))] * 3


def test_the_bundled_settings_file_is_what_train_export_writes_with_the_measured_best_and_the_lms_limit():
    from minidiff.train import bundled as recipe

    assert json.loads((ROOT / "weights" / model_settings.SETTINGS_FILE).read_text()) == recipe.SETTINGS
    bundled = model_settings.read_settings(ROOT / "weights")
    assert (bundled.sampler, bundled.steps, bundled.cfg) == ("euler_a", 20, 5.0)  # weights/README.md measured these
    assert (bundled.width, bundled.height) == (recipe.IMAGE_SIZE,) * 2
    assert bundled.min_steps["lms"] > bundled.steps and bundled.vocabulary == "shapes"


def test_evaluate_takes_its_defaults_from_the_models_settings_file_and_the_command_line_wins(
        tiny_with_settings, tmp_path, monkeypatch, capsys):
    from minidiff.tools import evaluate as tool

    asked = []  # (sampler, steps, cfg) of each evaluation, which is not run
    monkeypatch.setattr(tool, "evaluate", lambda model, samples, seed, sampler, steps, cfg, *rest, **kwargs:
                        asked.append((sampler, steps, cfg)) or ({}, []))
    monkeypatch.setattr(tool, "format_table", lambda report: "")
    given = ["--sampler", "euler", "--steps", 7, "--cfg", 1]
    for model in ([], ["--model", tiny_with_settings], ["--model", tiny_with_settings, *given],
                  ["--model", tiny_model().path]):
        code, _, err = run(["evaluate", *model, "--device", "cpu", "--json", tmp_path / "report.json"], capsys)
        assert code == 0, err
    assert asked == [("euler_a", 20, 5.0), ("ddim", 2, 3), ("euler", 7, 1.0), ("pndm", 25, 7.5)]


def test_a_copy_of_a_model_folder_draws_what_the_original_draws(tiny_with_settings, tmp_path, capsys):
    shutil.copytree(tiny_with_settings, tmp_path / "copy")
    for folder, out in ((tiny_with_settings, "a.png"), (tmp_path / "copy", "b.png")):
        code, _, err = run(["generate", "a red circle", "--model", folder, "--seed", 0, "--out", tmp_path / out],
                           capsys)
        assert code == 0, err
    expected = StableDiffusion.from_pretrained(tiny_with_settings).text_to_image(
        "a red circle", sampler="ddim", steps=2, guidance_scale=3, width=32, height=24, seed=0,
        progress=False).to_pil()[0]
    for out in ("a.png", "b.png"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / out)), np.asarray(expected))


@pytest.mark.parametrize("values, message", [
    ({"sampler": "euler", "stpes": 20}, "has unknown fields stpes; the fields are sampler, steps"),
    ({"sampler": "plms"}, "sampler must be one of ddpm"),
    ({"width": 128}, "give both width and height"),
    ({"min_steps": {"lms": "30"}}, "min_steps must map sampler names (\"lms\", \"lms karras\") to positive"),
    ({"min_steps": {"lms fast": 30}}, "min_steps must map sampler names"),
])
def test_a_wrong_settings_file_is_one_error_line_naming_it_in_full(values, message, tmp_path, capsys,
                                                                    monkeypatch):
    shutil.copytree(tiny_model().path, tmp_path / "model", ignore=shutil.ignore_patterns("*.safetensors"))
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["generate", "x", "--model", with_settings("model", **values)], capsys)
    assert code == 1 and err.startswith(f"error: {tmp_path / 'model' / model_settings.SETTINGS_FILE}")
    assert message in err.splitlines()[0]


@pytest.mark.parametrize("argv, message", [
    (["--width", 0], "argument --width: must be a positive number of pixels, got 0"),
    (["--height", -8], "argument --height: must be a positive number of pixels, got -8"),
    (["--cfg", -1], "argument --cfg: must be at least 0 (1 turns guidance off), got -1"),
    (["--device", "tpu"], "argument --device: must be cpu, cuda, cuda:N (the N-th GPU) or mps, got 'tpu'"),
    (["--num", "two"], "argument --num: invalid int value: 'two'"),
])
def test_option_mistakes_are_one_line_that_points_to_help(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["generate", "x", *map(str, argv)])
    captured = capsys.readouterr()
    assert exit.value.code == 2 and not captured.out
    assert captured.err == f"error: {message} (see python -m minidiff generate --help)\n"


def test_input_picture_sizes_are_checked_in_one_line_that_suggests_width_and_height(tmp_path):
    Image.new("RGB", (30, 21)).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match=rf"^the input picture {tmp_path}/odd.png is 30x21 px, but its width and "
                                         rf"height must be multiples of 8: pass --width 32 --height 24 to resize it$"):
        pipeline_options.input_picture(parse(["img2img", "x", "--image", "odd.png", "--model", tmp_path]),
                                       tmp_path / "odd.png")


def test_steps_beyond_the_models_training_timesteps_are_refused(capsys, tmp_path):
    code, _, err = run(["generate", "x", "--model", tiny_model().path, "--steps", 1001, "--out", tmp_path / "x.png"],
                       capsys)
    assert code == 1 and err.splitlines()[0] == ("error: --steps 1001 is more than the 1000 timesteps this model was "
                                                 "trained with; pass --steps 1000 or fewer")


def test_control_refuses_pictures_without_edges(tmp_path, capsys):
    Image.new("RGB", (32, 32), (40, 90, 200)).save(tmp_path / "flat.png")  # one colour: Canny finds nothing
    Image.new("L", (32, 32)).save(tmp_path / "black.png")
    for source, message in (("--image", f"Canny found no edges in {tmp_path}/flat.png with --canny-low 100 and "
                                        f"--canny-high 200: lower them"),
                            ("--control", f"the edge map {tmp_path}/black.png is all black")):
        picture = tmp_path / ("flat.png" if source == "--image" else "black.png")
        code, _, err = run(["control", "x", source, picture, "--model", tiny_model().path, "--out",
                            tmp_path / "never.png"], capsys)
        assert code == 1 and err.startswith(f"error: {message}"), err
    assert not (tmp_path / "never.png").exists()


def test_a_model_path_in_an_error_is_given_in_full(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["generate", "x", "--model", "nowhere"], capsys)
    assert code == 1 and str(tmp_path / "nowhere") in err.splitlines()[0]


def test_cuda_on_a_machine_without_it_is_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run(["generate", "x", "--model", tmp_path / "not-read", "--device", "cuda"], capsys)
    assert code == 1 and err.splitlines()[0] == "error: no CUDA device here; use --device cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    code, _, err = run(["generate", "x", "--model", tmp_path / "not-read", "--device", "cuda:2"], capsys)
    assert code == 1 and err.splitlines()[0] == ("error: there is no cuda:2 here: this machine has 2 CUDA "
                                                 "device(s), cuda:0 to cuda:1")


def test_a_run_outside_what_the_model_was_made_for_warns_once_in_one_line_each_and_goes_on(tiny_with_settings,
                                                                                           tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # each warning is given once a run, not once a picture
        code, stdout, err = run(["generate", "a photo of a cat, a red circle and a blue square below a green star",
                                 "--model", tiny_with_settings, "--sampler", "lms", "--steps", 1, "--width", 40,
                                 "--num", 2, "--out", tmp_path / "x.png"], capsys)
    assert code == 0 and "wrote" in stdout and (tmp_path / "x-1.png").is_file()
    assert err.splitlines() == [
        "warning: this model was trained at 32x24 px only, and 40x24 px may come out broken or repeated: leave out "
        "--width/--height to draw at 32x24",
        "warning: lms needs at least 30 steps with this model (its minidiff_settings.json says so), got 1: pass "
        "--steps 30 or more, or another --sampler",
        "warning: this model was trained only on captions of coloured shapes and has never seen the words cat, "
        "photo: its picture will not follow them",
        "warning: the prompt names 3 objects, but this model was trained on scenes of one or two: it will draw at "
        "most two",
    ]


def test_prompts_in_the_models_vocabulary_and_models_without_one_do_not_warn(tiny_with_settings):
    shapes, plain = model_settings.read_settings(tiny_with_settings), model_settings.ModelSettings()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model_settings.warn_about_prompt(shapes, "A big red circle left of a blue square, on a white background.")
        model_settings.warn_about_prompt(plain, "a photo of a cat and a red circle, a blue square and a green star")


def test_an_img2img_input_much_larger_than_the_output_warns_that_it_is_resized_and_to_what(tiny_with_settings,
                                                                                           tmp_path):
    Image.new("RGB", (128, 96)).save(tmp_path / "big.png")
    args = parse(["img2img", "x", "--image", tmp_path / "big.png", "--width", 32, "--model", tiny_with_settings])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        picture = pipeline_options.input_picture(args, args.image)
    assert picture.size == (32, 24)
    assert [str(w.message) for w in caught] == [f"the input picture {tmp_path}/big.png is 128x96 px, much larger "
                                                f"than the output: it will be resized to 32x24 px first"]


def test_help_shows_every_default_and_never_none(capsys):
    helps = {}
    for command in IMAGE_COMMANDS:
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        helps[command] = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert not any("default: None" in text for text in helps.values())
    assert "how much to change it, in (0, 1] (default: 0.75)" in helps["img2img"]
    assert "the model's native size" in helps["generate"] and "(default: the model's settings file, else 25)" in \
        helps["generate"]
    assert "Some need more steps than others: a model's settings file lists the fewest each needs with it " \
           "(min_steps;" in helps["generate"]
    control = helps["control"]
    assert all(f"{text} (default: {value})" in control for text, value in (
        ("strength of the ControlNet's guidance", "1.0"), ("Canny's low threshold (0-255 scale)", "100"),
        ("Canny's high threshold (0-255 scale)", "200"), ("fraction of the steps before it acts", "0.0")))
    assert "(default: float32)" in helps["generate"] and "ddim only: 0 deterministic, 1 as noisy as ddpm " \
                                                         "(default: 0.0)" in helps["generate"]


def test_the_image_commands_options_are_read_without_importing_torch():
    probe = ("import sys; from minidiff import cli\n"
             f"for name in {IMAGE_COMMANDS}: cli.COMMANDS[name].add_arguments(cli.Parser())\n"
             "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("scheduler, expected", [
    ({"_class_name": "PNDMScheduler", "skip_prk_steps": True}, "pndm"),  # Stable Diffusion 1.5's folder
    ({"_class_name": "EulerDiscreteScheduler"}, "euler"),
    ({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}, "dpmpp_2m_sde"),
    ({"_class_name": "SomeOtherScheduler"}, "euler"),
])
def test_a_folder_without_settings_uses_the_sampler_its_scheduler_file_names(scheduler, expected, tmp_path):
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    assert model_settings.read_settings(tmp_path).sampler == expected
    with_settings(tmp_path, steps=3)  # a settings file without a sampler: the scheduler's still
    assert model_settings.read_settings(tmp_path).sampler == expected
    with_settings(tmp_path, sampler="ddim")
    assert model_settings.read_settings(tmp_path).sampler == "ddim"


def test_an_lcm_folder_gets_lcms_few_steps_and_its_guidance(tmp_path):
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "LCMScheduler"}))
    settings = model_settings.read_settings(tmp_path)
    assert (settings.sampler, settings.steps, settings.cfg) == ("lcm", 4, 8.5)


def test_a_karras_sampler_name_with_sigmas_option_is_refused_with_karras_flag(tiny_with_settings):
    args = parse(["generate", "x", "--model", tiny_with_settings, "--sampler", "DPM++ 2M Karras"])
    assert pipeline_options.chosen(args)[0] == "dpmpp_2m karras"
    args = parse(["generate", "x", "--model", tiny_with_settings, "--sigmas", "beta", "--karras"])
    with pytest.raises(ValueError, match="--sigmas and --karras/--no-karras both choose"):
        pipeline_options.chosen(args)


@pytest.mark.parametrize("sampler, steps, warns", [
    ("lms", 29, True), ("lms", 30, False), ("LMS Karras", 39, True), ("lms karras", 40, False), ("euler", 2, False)])
def test_steps_below_a_samplers_min_steps_warn_with_its_spacing(sampler, steps, warns):
    settings = model_settings.ModelSettings(min_steps={"lms": 30, "lms karras": 40})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model_settings.warn_about_steps(settings, sampler, steps)
    assert bool(caught) is warns
    if warns:
        assert f"needs at least {30 if steps < 30 else 40} steps" in str(caught[0].message)
