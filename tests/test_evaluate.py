"""The evaluation's prompts, scores, VAE ceiling and edge F1, checked on pictures whose answers are known; its
report lists every prompt with what was detected and whether it passed, and its grid captions each picture so."""

import json
import types

import numpy as np
import torch
from PIL import Image

from minidiff import cli
from minidiff.data.captions import COLORS, POSITIONS, parse_prompt
from minidiff.data.shapes import render_scenes
from minidiff.tools.evaluate import (attribute_rates, captioned_grid, edge_f1, format_table, make_prompts,
                                     prompt_results, rates, reconstruction_prompts, reconstruction_rates)

ONE_THREAD = True  # small pictures one at a time: run this module on one CPU thread (tests/conftest.py)


def test_prompts_alternate_single_objects_and_related_pairs_of_two_colours():
    prompts = make_prompts(40, seed=3)
    assert prompts == make_prompts(40, seed=3) and prompts != make_prompts(40, seed=4)
    assert [kind for kind, _ in prompts] == ["single", "pair"] * 20
    for kind, prompt in prompts:
        attributes = parse_prompt(prompt)
        objects = attributes["objects"]
        assert len(objects) == (1 if kind == "single" else 2)
        if kind == "pair":
            assert attributes["relation"] is not None and objects[0]["color"] != objects[1]["color"]
    singles = [prompt for kind, prompt in make_prompts(96)[::2]]
    assert len(set(singles)) == 48  # every colour x shape once


def test_rendered_scenes_score_full_marks_and_wrong_colours_score_none():
    scenes, prompts = reconstruction_prompts(40, seed=1)
    pictures = render_scenes(scenes, 128)  # (N, 3, H, W) in [0, 1], exactly what the prompts ask for
    rates = attribute_rates(prompts, pictures)
    assert rates["single"]["samples"] == rates["pair"]["samples"] == 20
    assert all(value == 1.0 for entry in rates.values() for key, value in entry.items() if key != "samples")

    def recolour(prompt):  # every colour word moved on to the next colour of the palette
        return " ".join(COLORS[(COLORS.index(w) + 1) % len(COLORS)] if w in COLORS else w for w in prompt.split())

    wrong = attribute_rates([(kind, recolour(p)) for kind, p in prompts], pictures)
    assert wrong["single"]["color"] == wrong["pair"]["color"] == wrong["pair"]["all"] == 0.0
    assert wrong["single"]["shape"] == 1.0  # the shapes are still right


class RoundTrip(torch.nn.Module):
    """A stand-in VAE: the latent is the picture itself; ``decode`` applies ``damage`` to it."""

    class config:
        sample_size = 128

    def __init__(self, damage):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.damage = damage

    def encode(self, images):
        return types.SimpleNamespace(mode=lambda: images)  # the posterior's mode() is all that is read

    def decode(self, z):
        return self.damage(z)


def test_reconstruction_rates_read_the_decoded_pictures():
    perfect, pictures = reconstruction_rates(RoundTrip(lambda z: z), 12, seed=2, batch_size=5)
    assert pictures.shape == (12, 3, 128, 128) and 0 <= pictures.min() and pictures.max() <= 1
    assert perfect["pair"]["all"] == perfect["single"]["all"] == 1.0
    blank, _ = reconstruction_rates(RoundTrip(lambda z: torch.zeros_like(z)), 12, seed=2)  # uniform grey
    assert blank["single"]["count"] == blank["pair"]["all"] == 0.0
    report = {"samples": 12, "sampler": "euler_a", "steps": 20, "guidance": 5.0, "seed": 2, "attributes": perfect,
              "reconstruction": blank}
    assert "rendered scenes through the VAE" in format_table(report)


def test_edge_f1_is_one_for_the_same_edges_within_a_pixel_and_zero_far_away():
    target = torch.zeros(1, 32, 32, dtype=torch.bool)
    target[0, 8:24, 10] = True  # a vertical line
    assert edge_f1(target, target).item() == 1.0
    assert edge_f1(torch.roll(target, 1, dims=2), target).item() == 1.0  # one pixel off: within the slack
    assert edge_f1(torch.roll(target, 5, dims=2), target).item() == 0.0
    half = target.clone()
    half[0, 16:24, 10] = False  # half the line found, nothing wrong: precision 1, recall about 1/2
    assert 0.6 < edge_f1(half, target).item() < 0.75


def test_each_prompt_reports_its_seed_what_was_detected_and_each_request_met():
    scenes, prompts = reconstruction_prompts(4, seed=1)
    wrong = ("single", "a red star" if prompts[0][1] != "a red star" else "a blue star")  # asked, not drawn
    results = prompt_results([wrong, *prompts[1:]], render_scenes(scenes, 128), seed=7)
    assert [r["seed"] for r in results] == [7, 8, 9, 10] and results[0]["prompt"] == wrong[1]
    drawn, (detected,) = scenes[0].objects[0], results[0]["detected"]["objects"]
    assert (detected["color"], detected["shape"], detected["size"]) == (drawn.color, drawn.shape, drawn.size)
    assert detected["position"] in POSITIONS
    assert results[0]["checks"]["all"] is False and results[0]["checks"]["count"] is True
    assert all(r["checks"]["all"] is True for r in results[1:])
    assert results[1]["checks"].keys() == {"count", "color", "shape", "relation", "all"}  # a pair
    assert json.loads(json.dumps(results)) == results
    assert rates(results)["single"]["all"] == 0.5


def test_the_grid_captions_each_picture_with_pass_in_green_or_fail_in_red_and_its_prompt():
    images = torch.ones(3, 3, 64, 64)  # white pictures: every coloured pixel is the caption's
    results = [{"prompt": "a red circle above a blue square on a green background", "checks": {"all": passed}}
               for passed in (True, False, True)]
    grid = np.asarray(captioned_grid(images, results, columns=2)).astype(int)  # (H, W, 3)
    tile_height = (grid.shape[0] - 2) // 2
    assert grid.shape[1] == 2 * 64 + 2 and tile_height > 64  # two columns, 2-pixel gaps; room for the caption

    def caption(row, column):  # the caption under one picture, (h, 64, 3)
        top = row * (tile_height + 2)
        return grid[top + 64 : top + tile_height, column * 66 : column * 66 + 64]

    def has(pixels, colour):  # some pixel close to that colour
        return (np.abs(pixels - colour).sum(-1) < 60).any()

    assert has(caption(0, 0), (0, 140, 0)) and not has(caption(0, 0), (200, 0, 0))  # pass
    assert has(caption(0, 1), (200, 0, 0)) and not has(caption(0, 1), (0, 140, 0))  # FAIL
    text_rows = (caption(0, 0)[:, :, 0] < 100).any(1)  # rows with dark pixels: the prompt's text
    assert text_rows.sum() > 20  # several lines: wrapped, not cut to one


def test_evaluate_writes_every_prompt_to_its_json_and_a_captioned_grid(tmp_path, capsys):
    report, grid = tmp_path / "report.json", tmp_path / "grid.png"
    code = cli.main(["evaluate", "--samples", "2", "--steps", "1", "--device", "cpu", "--json", str(report),
                     "--grid", str(grid)])
    assert code == 0
    prompts = json.loads(report.read_text())["prompts"]
    assert [(p["kind"], p["prompt"], p["seed"]) for p in prompts] == [
        (kind, prompt, seed) for seed, (kind, prompt) in enumerate(make_prompts(2))]
    assert all({"detected", "checks"} <= p.keys() and "all" in p["checks"] for p in prompts)
    width, height = Image.open(grid).size
    assert width == 2 * 128 + 2 and height > 128  # the bundled model's 128-pixel pictures, captioned below


def test_evaluate_help_shows_the_sample_count_default(capsys):
    try:
        cli.main(["evaluate", "--help"])
    except SystemExit:
        pass
    assert "(default: 200)" in " ".join(capsys.readouterr().out.split())
