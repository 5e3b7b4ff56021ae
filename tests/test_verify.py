"""``python -m minidiff verify PATH`` passes on a model minidiff reads correctly and fails when it does not.

The tiny random model (tests/tiny_pipeline.py) is checked as a diffusers folder, as an inpainting folder and as a
single checkpoint file (which diffusers converts with its own ``from_single_file``). A wrong weight on minidiff's
side must make the U-Net row and every sampler row fail, and the command exit 1.
"""

import pytest
import torch
from tiny_pipeline import tiny_model

from minidiff import cli, verify
from minidiff.loading import load_components, save_single_file
from minidiff.samplers import KARRAS_SAMPLERS, SAMPLER_NAMES

SAMPLER_ROWS = [*SAMPLER_NAMES, *(f"{name} karras" for name in KARRAS_SAMPLERS)]
ONE_THREAD = True  # tiny networks: run this module on one CPU thread (tests/conftest.py)


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "verify", "verify")


def rows(stdout):
    """{check name: (max abs, max rel, result)} from the printed table."""
    table = {}
    for line in stdout.splitlines()[1:]:
        *name, max_abs, max_rel, _, result = line.split()
        if result in ("pass", "FAIL"):
            table[" ".join(name)] = (float(max_abs), float(max_rel), result)
    return table


def test_verify_passes_on_a_diffusers_folder_with_every_sampler_and_the_controlnet(capsys):
    code = cli.main(["verify", str(tiny_model().path), "--steps", "2"])
    out = capsys.readouterr().out
    table = rows(out)
    assert code == 0 and "all 17 checks passed" in out
    expected = ["tokenizer (ids)", "text encoder", "unet", "vae encode", "vae decode", "controlnet", *SAMPLER_ROWS]
    assert sorted(table) == sorted(expected)
    assert all(max_rel <= 1e-5 for _, max_rel, _ in table.values())


def test_verify_runs_inpainting_for_a_9_channel_unet(capsys):
    code = cli.main(["verify", str(tiny_model().inpaint_path), "--steps", "2"])
    assert code == 0 and "all 16 checks passed" in capsys.readouterr().out


def test_verify_passes_on_a_single_file(tmp_path, capsys):
    components = load_components(tiny_model().path)
    components.controlnet = None  # a single file has no room for it
    save_single_file(components, tmp_path / "tiny.safetensors")
    code = cli.main(["verify", str(tmp_path / "tiny.safetensors"), "--steps", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "all 16 checks passed" in out


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
