"""The captioned-shapes data: scenes obey their rules, captions never lie and parse back, the renderer draws them."""

import math

import numpy as np
import pytest
import torch

from minidiff.data.captions import (
    BACKGROUND_PHRASES,
    COLORS,
    FRAMES,
    OPPOSITE_RELATION,
    POSITION_PHRASES,
    RELATION_PHRASES,
    SHAPES,
    SIZE_WORDS,
    contradict,
    make_caption,
    parse_prompt,
)
from minidiff.data.shapes import (
    CELL_RANGE,
    EDGE,
    GAP,
    POSITION_CELL,
    RADIUS,
    REACH,
    RGB,
    SDF,
    Scene,
    SceneObject,
    make_dataset_grid,
    render_scenes,
    sample_batch,
    sample_scene,
)


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(1234)
    return [sample_scene(rng) for _ in range(3000)]


def test_scenes_depend_only_on_the_seed():
    assert sample_scene(7) == sample_scene(7)
    assert sample_scene(7) != sample_scene(8)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert [sample_scene(a) for _ in range(20)] == [sample_scene(b) for _ in range(20)]


def test_sample_batch_is_reproducible_from_a_torch_generator():
    first = sample_batch(torch.Generator().manual_seed(5), 6, 32)
    second = sample_batch(torch.Generator().manual_seed(5), 6, 32)
    other = sample_batch(torch.Generator().manual_seed(6), 6, 32)
    assert torch.equal(first[0], second[0]) and first[1] == second[1]
    assert first[1] != other[1]
    generator = torch.Generator().manual_seed(5)
    assert sample_batch(generator, 6, 32)[1] != sample_batch(generator, 6, 32)[1]  # the generator advances


def test_sample_batch_shapes_dtype_and_range():
    images, captions, scenes = sample_batch(0, 5, size=64)
    assert images.shape == (5, 3, 64, 64) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert len(captions) == len(scenes) == 5 and all(isinstance(c, str) and c for c in captions)
    assert [s.caption for s in scenes] == captions


def test_captions_parse_back_to_exactly_what_they_state(scenes):
    for scene in scenes:
        assert parse_prompt(scene.caption) == scene.attributes, scene.caption


def test_every_phrase_of_every_template_occurs(scenes):
    """Together with the round trip above, this covers every template and synonym."""
    text = "\n".join(s.caption for s in scenes)
    phrases = [p for table in (POSITION_PHRASES, RELATION_PHRASES, SIZE_WORDS) for ps in table.values() for p in ps]
    phrases += [p.format(c) for p in BACKGROUND_PHRASES for c in COLORS]
    phrases += [f.format("").strip() for f in FRAMES if f != "{}"] + [" and a", "background with a"]
    phrases += [f"{c} {s}" for c in COLORS for s in SHAPES]
    missing = [p for p in phrases if p not in text]
    assert not missing


def test_captions_state_only_what_the_scene_shows(scenes):
    for scene in scenes:
        stated = scene.attributes
        assert [(o["color"], o["shape"]) for o in stated["objects"]] == [(o.color, o.shape) for o in scene.objects]
        for said, obj in zip(stated["objects"], scene.objects):
            assert said["size"] in (None, obj.size)
        assert stated["background"] in (None, scene.background)
        assert stated["relation"] in (None, scene.relation)
        assert stated["position"] in (None, scene.objects[0].position)
        if len(scene.objects) == 2:
            assert stated["position"] is None


def is_true_of(attributes, scene):
    """Whether a caption stating ``attributes`` describes ``scene`` (objects in either order for a relation)."""
    drawn = [(o.color, o.shape) for o in scene.objects]
    said = [(o["color"], o["shape"]) for o in attributes["objects"]]
    if attributes["relation"] is not None:
        same = said == drawn and attributes["relation"] == scene.relation
        swapped = said == drawn[::-1] and attributes["relation"] == OPPOSITE_RELATION[scene.relation]
        if not (same or swapped):
            return False
    elif sorted(said) != sorted(drawn):
        return False
    position = attributes["position"]
    return position is None or position == scene.objects[0].position


def test_contradictions_are_false_but_use_the_same_words(scenes):
    rng = np.random.default_rng(0)
    changed = {"color": 0, "shape": 0, "relation": 0, "position": 0}
    for scene in scenes:
        assert is_true_of(scene.attributes, scene)  # the checker accepts every true caption
        negative = contradict(scene.attributes, rng)
        assert not is_true_of(negative, scene), (scene.caption, negative)
        assert parse_prompt(make_caption(negative, rng)) == negative
        before, after = scene.attributes, negative
        for key in ("color", "shape"):
            changed[key] += [o[key] for o in before["objects"]] != [o[key] for o in after["objects"]]
        for key in ("relation", "position"):
            changed[key] += before[key] != after[key]
        words = {key: [sorted(o[key] for o in attrs["objects"]) for attrs in (before, after)] for key in ("color", "shape")}
        movable = len(before["objects"]) == 2 and (before["relation"] is not None or
                                                   len({o[k] for o in before["objects"] for k in ("color", "shape")}) == 4)
        if movable:  # a pair keeps its words: colours and shapes are only moved around
            assert words["color"][0] == words["color"][1] and words["shape"][0] == words["shape"][1]
    assert all(count > 0.1 * len(scenes) for count in changed.values()), changed


def test_captions_vary(scenes):
    stated = [s.attributes for s in scenes]
    assert 0.4 < np.mean([len(a["objects"]) == 1 for a in stated]) < 0.6
    for key in ("position", "relation", "background"):
        assert 0.15 < np.mean([a[key] is not None for a in stated]) < 0.7, key
    assert len({s.caption for s in scenes}) > 0.9 * len(scenes)


def test_examples_parse():
    assert parse_prompt("a red circle") == {
        "objects": [{"color": "red", "shape": "circle", "size": None}],
        "position": None, "relation": None, "background": None,
    }
    assert parse_prompt("There is a small orange star at the bottom.") == {
        "objects": [{"color": "orange", "shape": "star", "size": "small"}],
        "position": "bottom", "relation": None, "background": None,
    }
    assert parse_prompt("a blue square to the left of a big white ring on a yellow background") == {
        "objects": [
            {"color": "blue", "shape": "square", "size": None},
            {"color": "white", "shape": "ring", "size": "large"},
        ],
        "position": None, "relation": "left of", "background": "yellow",
    }
    assert parse_prompt("a purple circle in the top-left corner")["position"] == "top left"
    assert parse_prompt("a green heart in the centre")["position"] == "center"
    assert parse_prompt("a red circle and a blue square")["relation"] is None
    assert parse_prompt("a cat")["objects"] == []


def test_scene_rules_hold(scenes):
    for scene in scenes:
        objects = scene.objects
        assert len(objects) in (1, 2)
        assert all(o.color != scene.background for o in objects)
        for o in objects:
            low, high = RADIUS[o.size]
            assert low <= o.radius <= high
            assert all(REACH * o.radius + EDGE - 1e-9 <= c <= 1 - REACH * o.radius - EDGE + 1e-9 for c in o.center)
        if len(objects) == 1:
            assert scene.relation is None
            row, col = POSITION_CELL[objects[0].position]
            for c, i in zip(objects[0].center, (col, row)):  # inside the cell, away from its borders
                low, high = CELL_RANGE[i]
                assert low <= c <= high
        else:
            a, b = objects
            assert (a.color, a.shape) != (b.color, b.shape)
            dx, dy = a.center[0] - b.center[0], a.center[1] - b.center[1]
            assert math.hypot(dx, dy) >= REACH * (a.radius + b.radius) + GAP - 1e-9  # no overlap, a clear gap
            along, across = {
                "above": (-dy, dx), "below": (dy, dx), "left of": (-dx, dy), "right of": (dx, dy)
            }[scene.relation]
            assert along >= REACH * (a.radius + b.radius) + GAP - 1e-9 and abs(across) <= 0.5 * along + 1e-9


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_fits_its_reach_and_is_centred(shape):
    r, n = 20.0, 80
    p = torch.arange(n, dtype=torch.float64) + 0.5 - n / 2
    x, y = p[None, None, :], p[None, :, None]
    inside = (SDF[shape](x, y, torch.tensor(r, dtype=torch.float64))[0] < 0.5).double()  # any coverage at all
    distance = torch.sqrt(x[0] ** 2 + y[0] ** 2)
    assert float((distance * inside).max()) <= REACH * r + 0.75
    area = float(inside.sum())
    centroid = [float((inside * c[0]).sum()) / area for c in (x, y)]
    assert area > 1.2 * r * r and max(map(abs, centroid)) < 0.15 * r


def test_renderer_matches_a_full_frame_reference():
    """The windowed renderer equals evaluating every object's coverage over the whole image (float64)."""
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(40)]
    size = 96
    got = render_scenes(scenes, size).double()
    p = torch.arange(size, dtype=torch.float64) + 0.5
    for image, scene in zip(got, scenes):
        expected = torch.tensor(RGB[scene.background], dtype=torch.float64)[:, None, None].expand(3, size, size) / 255
        for o in scene.objects:
            cx, cy, r = (torch.tensor(v * size, dtype=torch.float64) for v in (*o.center, o.radius))
            alpha = (0.5 - SDF[o.shape](p[None, None, :] - cx, p[None, :, None] - cy, r)[0]).clamp(0, 1)
            color = torch.tensor(RGB[o.color], dtype=torch.float64)[:, None, None] / 255
            expected = expected + alpha * (color - expected)
        assert (image - expected).abs().max() < 1e-5


def test_renderer_draws_exact_colours_and_a_one_pixel_antialiased_edge():
    obj = SceneObject("circle", "red", "large", (0.5, 0.5), 0.2)
    scene = Scene([obj], "blue", None, "a red circle on a blue background", {})
    image = (render_scenes([scene], 100)[0] * 255).round()  # (3, H, W)
    assert image[:, 50, 50].tolist() == list(RGB["red"]) and image[:, 5, 5].tolist() == list(RGB["blue"])
    p = torch.arange(100) + 0.5
    distance = torch.sqrt((p[None, :] - 50) ** 2 + (p[:, None] - 50) ** 2) - 20  # (H, W) from the outline
    blended = (image[0] > RGB["blue"][0]) & (image[0] < RGB["red"][0])
    assert blended.sum() > 100 and distance[blended].abs().max() <= 0.5


def test_rendering_scales_with_image_size():
    scenes = [sample_scene(s) for s in range(8)]
    small, large = render_scenes(scenes, 64), render_scenes(scenes, 128)
    downsampled = torch.nn.functional.avg_pool2d(large, 2)
    assert (downsampled - small).abs().mean() < 0.01


def test_dataset_grid_has_one_titled_panel_per_scene():
    import matplotlib.pyplot as plt

    figure = make_dataset_grid(seed=0, rows=2, cols=3, size=64)
    titles = [ax.get_title() for ax in figure.axes]
    captions = sample_batch(0, 6, 64)[1]
    assert [t.replace("\n", " ") for t in titles] == captions
    plt.close(figure)
