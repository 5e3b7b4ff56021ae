"""The attribute detector reads rendered scenes back, clean or noisy and blurred, and scores prompts against them."""

import numpy as np
import pytest
import scipy.ndimage
import torch

from minidiff.canny import gaussian_blur
from minidiff.data.captions import parse_prompt
from minidiff.data.detect import (
    DetectedObject,
    Detection,
    connected_components,
    detect_objects,
    position_matches,
    relation_holds,
    score,
)
from minidiff.data.shapes import Scene, SceneObject, render_scenes, sample_scene

N_SCENES = 300
ONE_THREAD = True  # one small image at a time: run this module on one CPU thread (tests/conftest.py)


def to_uint8(images):
    """(B, 3, H, W) floats on the 0-255 scale -> uint8 (B, H, W, 3)."""
    return images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(2024)
    return [sample_scene(rng) for _ in range(N_SCENES)]


@pytest.fixture(scope="module")
def clean(scenes):
    return [detect_objects(image) for image in to_uint8(render_scenes(scenes) * 255)]


@pytest.fixture(scope="module")
def noisy(scenes):
    """Blurred (Gaussian, sigma = 1 pixel), then noisy (Gaussian, sigma = 10 of 255), as generated images may be."""
    generator = torch.Generator().manual_seed(0)
    images = gaussian_blur(render_scenes(scenes) * 255, 1.0)
    images = images + 10 * torch.randn(images.shape, generator=generator)
    return [detect_objects(image) for image in to_uint8(images)]


def accuracy(scenes, detections):
    """Fraction of ground-truth facts recovered, per attribute. Objects are matched by nearest centroid."""
    hits = {key: [] for key in ("count", "background", "color", "shape", "size", "position", "relation")}
    for scene, found in zip(scenes, detections):
        hits["count"].append(len(found.objects) == len(scene.objects))
        hits["background"].append(found.background == scene.background)
        if not found.objects:
            continue
        matched = [
            min(found.objects, key=lambda d: (d.center[0] - o.center[0]) ** 2 + (d.center[1] - o.center[1]) ** 2)
            for o in scene.objects
        ]
        for truth, guess in zip(scene.objects, matched):
            for key in ("color", "shape", "size"):
                hits[key].append(getattr(truth, key) == getattr(guess, key))
        if scene.relation is None:
            hits["position"].append(scene.objects[0].position == matched[0].position)
        else:
            hits["relation"].append(relation_holds(scene.relation, matched[0].center, matched[1].center))
    return {key: float(np.mean(values)) for key, values in hits.items()}


def test_detector_recovers_clean_rendered_scenes(scenes, clean):
    result = accuracy(scenes, clean)
    assert all(value >= 0.99 for value in result.values()), result


def test_detector_is_robust_to_blur_and_noise(scenes, noisy):
    result = accuracy(scenes, noisy)
    assert all(value >= 0.95 for value in result.values()), result


def full_attributes(scene):
    """Everything about a scene, in parse_prompt's format: the hardest prompt it satisfies."""
    return {
        "objects": [{"color": o.color, "shape": o.shape, "size": o.size} for o in scene.objects],
        "position": scene.objects[0].position if scene.relation is None else None,
        "relation": scene.relation,
        "background": scene.background,
    }


def test_every_request_of_the_caption_scores_true(scenes, clean, noisy):
    for detections, least in ((clean, 0.99), (noisy, 0.95)):
        for attributes in ([s.attributes for s in scenes], [full_attributes(s) for s in scenes]):
            scores = [score(a, d) for a, d in zip(attributes, detections)]
            assert np.mean([s["all"] for s in scores]) >= least
        assert np.mean([score(parse_prompt(s.caption), d)["all"] for s, d in zip(scenes, detections)]) >= least


def test_score_reports_each_unmet_request():
    found = Detection("white", [
        DetectedObject("red", "circle", "large", (0.5, 0.2), 1500),
        DetectedObject("blue", "square", "small", (0.45, 0.8), 300),
    ])
    assert score(parse_prompt("a big red circle above a small blue square on a white background"), found) == {
        "count": True, "color": True, "shape": True, "size": True, "relation": True, "background": True, "all": True,
    }
    assert score(parse_prompt("a blue square above a red circle"), found)["relation"] is False
    assert score(parse_prompt("a red circle to the left of a blue square"), found)["relation"] is False
    assert score(parse_prompt("a green circle above a blue square"), found)["color"] is False
    assert score(parse_prompt("a red star above a blue square"), found)["shape"] is False
    assert score(parse_prompt("a small red circle"), found) == {
        "count": False, "color": True, "shape": True, "size": False, "all": False,
    }
    assert score(parse_prompt("a red circle at the top on a black background"), found)["background"] is False
    assert score(parse_prompt("a red circle at the top"), found)["position"] is True
    nothing = Detection("white", [])
    assert score(parse_prompt("a red circle above a blue ring"), nothing) == {
        "count": False, "color": False, "shape": False, "relation": False, "all": False,
    }


def test_position_requests():
    assert position_matches("left", "top left") and position_matches("left", "bottom left")
    assert not position_matches("left", "center") and not position_matches("top left", "top")
    assert position_matches("center", "center") and not position_matches("center", "top")
    assert position_matches("bottom", "bottom right") and not position_matches("bottom", "right")


def test_touching_objects_of_two_colours_are_two_objects():
    left = SceneObject("square", "red", "large", (0.35, 0.5), 0.16)
    right = SceneObject("square", "blue", "large", (0.35 + 2 * 0.85 * 0.16, 0.5), 0.16)  # sides touch
    scene = Scene([left, right], "white", "left of", "", {})
    found = detect_objects(to_uint8(render_scenes([scene]) * 255)[0])
    assert sorted((d.color, d.shape) for d in found.objects) == [("blue", "square"), ("red", "square")]
    assert relation_holds("left of", *(d.center for d in sorted(found.objects, key=lambda d: d.color == "blue")))


def test_connected_components_match_scipy():
    rng = np.random.default_rng(0)
    masks = scipy.ndimage.binary_opening(rng.random((4, 60, 70)) < 0.45, structure=np.ones((1, 2, 2)))
    labels = connected_components(torch.from_numpy(masks)).numpy()
    for mask, label in zip(masks, labels):
        expected, count = scipy.ndimage.label(mask, structure=np.ones((3, 3)))
        assert count > 5 and len(np.unique(label[mask])) == count
        assert ((label > 0) == mask).all()
        pairs = set(zip(expected[mask].tolist(), label[mask].tolist()))
        assert len(pairs) == count  # the same partition: a one-to-one map between the two labellings


def test_detect_objects_explains_a_wrong_input():
    with pytest.raises(ValueError, match="uint8 of shape"):
        detect_objects(torch.zeros(3, 32, 32))
