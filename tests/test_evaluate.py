"""The evaluation's prompts, scores, VAE ceiling and edge F1, checked on pictures whose answers are known."""

import types

import torch

from minidiff.data.captions import COLORS, parse_prompt
from minidiff.data.shapes import render_scenes
from minidiff.tools.evaluate import (attribute_rates, edge_f1, format_table, make_prompts, reconstruction_prompts,
                               reconstruction_rates)

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
