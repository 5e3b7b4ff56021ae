"""``python -m minidiff verify PATH`` passes on a model minidiff reads correctly and fails when it does not.

The tiny random model (tests/tiny_pipeline.py) is checked as a diffusers folder, as an inpainting folder and as a
single checkpoint file (which diffusers converts with its own ``from_single_file``), and with the scheduler files
real checkpoints ship: SD 1.5's and SD 2.1's (no timestep_spacing) and a zero-terminal-SNR one written by diffusers,
where Heun and LMS cannot apply and are skipped. A wrong weight on minidiff's side must make the U-Net row and every
sampler row fail, and the command exit 1. The reference libraries' progress bars and log messages never reach the
user: the table is all the command prints.
"""

import json
import shutil

import diffusers
import pytest
import torch
import transformers
from test_scheduler_config import SD15_SCHEDULER_FILE, SD21_SCHEDULER_FILE
from tiny_pipeline import tiny_model

from minidiff import cli
from minidiff.tools import verify
from minidiff.loading import load_components, save_single_file
from minidiff.samplers import KARRAS_SAMPLERS, SAMPLER_NAMES, SAMPLERS

SAMPLER_ROWS = [*SAMPLER_NAMES, *(f"{name} karras" for name in KARRAS_SAMPLERS)]
ONE_THREAD = True  # tiny networks: run this module on one CPU thread (tests/conftest.py)


def rows(stdout):
    """{check name: (max abs, max rel, result)} from the printed table; a skipped row's result is its reason."""
    return {name: (max_abs, max_rel, result) for name, (max_abs, max_rel, _, result) in table_rows(stdout).items()}


def table_rows(stdout):
    """{check name: (max abs, max rel, tolerance, result)}; a skipped row has None for the numbers."""
    table = {}
    for line in stdout.splitlines()[1:]:
        row, skipped, reason = line.partition("   skipped: ")
        if skipped:
            *name, _, _, _ = row.split()  # "-" for each number
            table[" ".join(name)] = (None, None, None, f"skipped: {reason}")
            continue
        *name, max_abs, max_rel, tolerance, result = row.split()
        if result in ("pass", "FAIL"):
            table[" ".join(name)] = (float(max_abs), float(max_rel), float(tolerance), result)
    return table


def tiny_model_with_scheduler(folder, write_scheduler):
    """The tiny model without its ControlNet, copied to ``folder``, its scheduler/ written by write_scheduler."""
    shutil.copytree(tiny_model().path, folder, ignore=shutil.ignore_patterns("controlnet"))
    shutil.rmtree(folder / "scheduler")
    write_scheduler(folder / "scheduler")
    return folder


def write_json(folder, config):
    folder.mkdir()
    (folder / "scheduler_config.json").write_text(json.dumps(config))


# what diffusers and transformers print while loading and saving, at their default settings
REFERENCE_NOISE = ("Loading weights", "Loading pipeline components", "Writing model shards", "it/s]",
                   "[transformers]", "should be kept in float32")


@pytest.fixture
def loud_reference_libraries():
    """diffusers and transformers at their default settings (tests/conftest.py quiets their logs): warnings shown,
    progress bars on; their settings restored afterwards."""
    libraries = (diffusers.utils.logging, transformers.utils.logging)
    saved = [(library.get_verbosity(), library.is_progress_bar_enabled()) for library in libraries]
    for library in libraries:
        library.set_verbosity_warning()
        library.enable_progress_bar()
    yield
    for library, (verbosity, bars) in zip(libraries, saved):
        library.set_verbosity(verbosity)
        if not bars:
            library.disable_progress_bar()


def assert_only_the_report(out, err):
    assert err == "" and not [noise for noise in REFERENCE_NOISE if noise in out], (out, err)
    assert transformers.utils.logging.is_progress_bar_enabled()  # the libraries' settings are given back
    assert diffusers.utils.logging.get_verbosity() == diffusers.utils.logging.WARNING


def test_verify_passes_on_a_diffusers_folder_with_every_sampler_and_the_controlnet(loud_reference_libraries, capfd):
    path = str(tiny_model().path)
    capfd.readouterr()  # what building the tiny model printed
    code = cli.main(["verify", path, "--steps", "2"])
    out, err = capfd.readouterr()
    assert_only_the_report(out, err)
    table = rows(out)
    assert code == 0 and f"all {len(SAMPLER_ROWS) + 6} checks passed" in out
    expected = ["tokenizer (ids)", "text encoder", "unet", "vae encode", "vae decode", "controlnet", *SAMPLER_ROWS]
    assert sorted(table) == sorted(expected)
    assert all(max_rel <= 1e-5 for _, max_rel, _ in table.values())


def test_verify_runs_inpainting_for_a_9_channel_unet(capsys):
    code = cli.main(["verify", str(tiny_model().inpaint_path), "--steps", "2"])
    assert code == 0 and f"all {len(SAMPLER_ROWS) + 5} checks passed" in capsys.readouterr().out


def test_verify_passes_on_a_single_file(loud_reference_libraries, tmp_path, capfd):
    components = load_components(tiny_model().path)
    components.controlnet = None  # a single file has no room for it
    save_single_file(components, tmp_path / "tiny.safetensors")
    capfd.readouterr()
    code = cli.main(["verify", str(tmp_path / "tiny.safetensors"), "--steps", "2"])
    out, err = capfd.readouterr()
    assert_only_the_report(out, err)
    assert code == 0 and f"all {len(SAMPLER_ROWS) + 5} checks passed" in out


def test_verify_fails_when_one_weight_is_wrong(capsys, monkeypatch):
    def load_with_one_wrong_weight(*args, **kwargs):
        components = load_components(*args, **kwargs)
        with torch.no_grad():
            components.unet.conv_in.weight[0, 0, 1, 1] += 0.05  # one of ~1,200 numbers of the first convolution
        return components

    monkeypatch.setattr(verify, "load_components", load_with_one_wrong_weight)
    code = cli.main(["verify", str(tiny_model().path), "--steps", "2"])
    out = capsys.readouterr().out
    table = rows(out)
    assert code == 1 and "FAILED" in out
    assert table["unet"][2] == "FAIL" and table["vae decode"][2] == "pass"
    assert all(table[row][2] == "FAIL" for row in SAMPLER_ROWS)


@pytest.mark.parametrize("scheduler_file", [SD15_SCHEDULER_FILE, SD21_SCHEDULER_FILE], ids=["sd15", "sd21"])
def test_verify_passes_every_row_on_a_scheduler_file_without_timestep_spacing(scheduler_file, tmp_path, capsys):
    folder = tiny_model_with_scheduler(tmp_path / "model", lambda path: write_json(path, scheduler_file))
    code = cli.main(["verify", str(folder), "--steps", "2"])
    out = capsys.readouterr().out
    assert code == 0 and f"all {len(SAMPLER_ROWS) + 5} checks passed" in out
    assert sorted(rows(out)) == sorted(["tokenizer (ids)", "text encoder", "unet", "vae encode", "vae decode",
                                        *SAMPLER_ROWS])


def test_verify_skips_heun_and_lms_on_a_zero_snr_checkpoint_and_passes_every_other_row(tmp_path, capsys):
    zero_snr = diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
        steps_offset=1, prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")
    folder = tiny_model_with_scheduler(tmp_path / "model", zero_snr.save_pretrained)
    code = cli.main(["verify", str(folder), "--steps", "2"])
    out = capsys.readouterr().out
    table = table_rows(out)
    skipped = [row for row, name, _ in verify.sampler_runs() if not SAMPLERS[name].supports_zero_snr]
    assert {"heun", "heun karras", "lms", "lms karras"} <= set(skipped)
    ran = len(SAMPLER_ROWS) + 5 - len(skipped)
    assert code == 0 and f"all {ran} checks passed; {len(skipped)} skipped ({', '.join(skipped)})" in out
    assert sorted(name for name, row in table.items() if row[3].startswith("skipped")) == sorted(skipped)
    assert table["heun"] == (None, None, None,
                             "skipped: diffusers' HeunDiscreteScheduler has no rescale_betas_zero_snr option")
    assert all(table[name][3] == "pass" for name in table if name not in skipped)


def test_verify_reports_the_tolerance_each_row_was_held_to(capsys):
    code = cli.main(["verify", str(tiny_model().inpaint_path), "--steps", "2"])
    table = table_rows(capsys.readouterr().out)
    network_tolerance, run_tolerance = verify.TOLERANCES[torch.float32]
    assert code == 0 and network_tolerance == run_tolerance == 1e-5  # float32: the parity minidiff claims
    assert table["tokenizer (ids)"][2] == 0  # token ids must be equal
    assert all(table[name][2] == network_tolerance for name in ("text encoder", "unet", "vae encode", "vae decode"))
    assert all(table[name][2] == run_tolerance for name in SAMPLER_ROWS)


def test_verify_says_in_one_line_how_to_mend_a_scheduler_file_with_a_null_timestep_spacing(tmp_path, capsys):
    written_by_older_minidiff = {**SD15_SCHEDULER_FILE, "timestep_spacing": None}
    folder = tiny_model_with_scheduler(tmp_path / "model", lambda path: write_json(path, written_by_older_minidiff))
    code = cli.main(["verify", str(folder), "--steps", "2"])
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and '"timestep_spacing": null' in errors[0], lines
    assert "delete that line" in errors[0] and lines[-1] == "(run again with --debug for the full traceback)"
