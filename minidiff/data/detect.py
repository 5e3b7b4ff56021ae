"""Read a shapes-world image back into attributes, so generated images can be scored against their prompts.

    1. colour      each pixel takes the nearest colour of the palette; the most frequent one is the background
    2. objects     the connected regions of non-background pixels, without specks; each takes the colour most
                   of its pixels have. Antialiased edges blend two colours into thin lines of a third; a second
                   colour that is no thin line and covers 30% of the region means two objects that touch
    3. shape       the region, centred and scaled by its area, is compared with each shape seen the same way;
                   the best overlap (intersection over union) wins
    4. size        the radius that gives the region's area for that shape, against ``SIZE_THRESHOLD``
    5. position    the centroid's cell in the 3 x 3 grid of thirds

``score(parse_prompt(prompt), detect_objects(image))`` says which of the prompt's requests the image meets.
Everything here is a few small torch operations on one image, no learned weights.
"""

import dataclasses
import functools
import itertools

import numpy as np
import torch
import torch.nn.functional as F

from minidiff.canny import dilate
from minidiff.data.captions import COLORS, POSITIONS, SHAPES
from minidiff.data.shapes import RGB, SDF, SIZE_THRESHOLD, position_name

PALETTE = torch.tensor([RGB[c] for c in COLORS], dtype=torch.float32)  # (8, 3)
TEMPLATE_SIZE = 32  # shapes are compared on a TEMPLATE_SIZE x TEMPLATE_SIZE grid


@dataclasses.dataclass
class DetectedObject:
    color: str
    shape: str
    size: str  # "small" or "large"
    center: tuple  # (x, y) centroid as fractions of the image width and height, y down
    area: int  # pixels

    @property
    def position(self):
        """The cell of the 3 x 3 grid of thirds that holds the centroid: 'top left', 'top', ..., 'bottom right'."""
        return position_name(self.center)


@dataclasses.dataclass
class Detection:
    background: str
    objects: list  # DetectedObject, largest first


def connected_components(masks):
    """Label the 8-connected regions of boolean masks (N, H, W): returns int64 (N, H, W), 0 outside the masks.

    Every pixel starts with its own number (its index + 1). Each round, a pixel takes the largest number in its
    3 x 3 neighbourhood inside the mask, then jumps to the number held by the pixel its number names (which
    lies in the same region and holds at least as large a number), so numbers travel fast. When nothing
    changes, every region carries one number: the largest index in it, plus one.
    """
    n, h, w = masks.shape
    labels = torch.arange(1, h * w + 1).expand(n, h * w) * masks.flatten(1)  # (N, H*W)
    while True:
        grown = dilate(labels.view(n, h, w)).flatten(1) * masks.flatten(1)
        grown = grown.gather(1, (grown - 1).clamp(min=0)) * masks.flatten(1)
        if torch.equal(grown, labels):
            return labels.view(n, h, w)
        labels = grown


def normalized_view(mask):
    """A region (H, W) resampled on a T x T grid around its centroid, reaching sqrt(area) pixels each way: (T, T).

    Every region then appears at the same place and scale whatever its position and size, and a few stray
    pixels at its border barely move its centroid or area.
    """
    h, w = mask.shape
    ys, xs = mask.nonzero(as_tuple=True)
    reach = len(xs) ** 0.5
    u = (torch.arange(TEMPLATE_SIZE) + 0.5) / TEMPLATE_SIZE * 2 - 1  # (T,) in (-1, 1)
    x = (xs.float().mean() + 0.5 + reach * u) / w * 2 - 1  # grid_sample's coordinates: -1 and 1 are image borders
    y = (ys.float().mean() + 0.5 + reach * u) / h * 2 - 1
    grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), -1)  # (T, T, 2) of (x, y)
    return F.grid_sample(mask[None, None].float(), grid[None], align_corners=False)[0, 0]


@functools.cache
def _templates():
    """Each shape drawn at r = 16 pixels and seen through normalized_view, (S, T, T); its area in units of r^2, (S,)."""
    r, n = 16.0, 64
    p = torch.arange(n, dtype=torch.float32) + 0.5 - n / 2
    masks = [SDF[shape](p[None, None, :], p[None, :, None], torch.tensor(r))[0] < 0 for shape in SHAPES]
    return torch.stack([normalized_view(m) for m in masks]), torch.tensor([float(m.sum()) / r**2 for m in masks])


def classify_shape(mask):
    """The shape whose template overlaps the region best (both seen through normalized_view).

    Overlap of soft masks a, b: IoU = sum(min(a, b)) / sum(max(a, b)). A hole means ring, spikes mean star.
    """
    templates, _ = _templates()
    region = normalized_view(mask)
    iou = torch.minimum(templates, region).sum((1, 2)) / torch.maximum(templates, region).sum((1, 2))
    return SHAPES[int(iou.argmax())]


def _erode(mask):
    """Shave one pixel off a region's outline (3 x 3 erosion): what is left of a line two pixels wide is nothing."""
    return ~dilate(~mask)


@torch.no_grad()
def detect_objects(image, min_area=0.001):
    """Find the background colour and the objects of an image, uint8 (H, W, 3) as NumPy or torch.

    min_area: the least area of an object, as a fraction of the image.
    Returns a Detection, its objects sorted by area, largest first.
    """
    image = torch.as_tensor(np.asarray(image))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != torch.uint8:
        raise ValueError(
            f"detect_objects expects one RGB image, uint8 of shape (H, W, 3); got {image.dtype} {tuple(image.shape)}. "
            "Convert a float image in [-1, 1] with ((x + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0)."
        )
    h, w, _ = image.shape
    squared_distance = ((image[:, :, None, :].float() - PALETTE) ** 2).sum(-1)  # (H, W, 8)
    nearest = squared_distance.argmin(-1)  # (H, W) index of the nearest palette colour
    background = int(torch.bincount(nearest.flatten(), minlength=len(COLORS)).argmax())

    foreground = nearest != background
    labels = connected_components(foreground[None])[0]  # (H, W)
    _, template_areas = _templates()
    least = min_area * h * w

    objects = []
    for label in labels.unique()[1:]:
        region = labels == label
        if int(region.sum()) < least:
            continue  # a speck
        counts = torch.bincount(nearest[region], minlength=len(COLORS))  # (8,)
        main = int(counts.argmax())
        colors = [main] + [  # a second colour must cover 30% of the region and be more than a thin line
            c for c in range(len(COLORS))
            if c != main and counts[c] >= 0.3 * counts.sum() and int(_erode(region & (nearest == c)).sum()) >= least
        ]
        for c in colors:  # usually one; two when objects of different colours touch
            mask = region & (nearest == c) if len(colors) > 1 else region
            shape = classify_shape(mask)
            area = int(mask.sum())
            radius = (area / float(template_areas[SHAPES.index(shape)])) ** 0.5 / (h * w) ** 0.5
            ys, xs = mask.nonzero(as_tuple=True)
            center = ((float(xs.float().mean()) + 0.5) / w, (float(ys.float().mean()) + 0.5) / h)
            size = "large" if radius > SIZE_THRESHOLD else "small"
            objects.append(DetectedObject(COLORS[c], shape, size, center, area))
    return Detection(COLORS[background], sorted(objects, key=lambda o: -o.area))


# What a requested position demands of the (row, column) of the centroid's cell; None: anywhere along that axis.
# "on the left" is met anywhere in the left third, "in the center" only in the middle cell.
_POSITION_DEMANDS = {
    "top left": (0, 0), "top": (0, None), "top right": (0, 2),
    "left": (None, 0), "center": (1, 1), "right": (None, 2),
    "bottom left": (2, 0), "bottom": (2, None), "bottom right": (2, 2),
}


def position_matches(asked, found):
    """Whether a detected cell name ``found`` satisfies a requested position ``asked`` (see _POSITION_DEMANDS)."""
    row, col = divmod(POSITIONS.index(found), 3)
    want_row, want_col = _POSITION_DEMANDS[asked]
    return want_row in (None, row) and want_col in (None, col)


def relation_holds(relation, a, b):
    """Whether centre a stands in ``relation`` to centre b: the offset points the right way along the
    relation's axis and is longer along it than across it."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    along, across = {"above": (-dy, dx), "below": (dy, dx), "left of": (-dx, dy), "right of": (dx, dy)}[relation]
    return along > abs(across)


def score(attributes, detection):
    """Which requests of a prompt an image meets: a dict of booleans for the attributes the prompt asks for.

    attributes: as returned by captions.parse_prompt; detection: as returned by detect_objects.
    The requested objects are matched to distinct detected objects so that most colours, then shapes, then
    sizes agree (larger detections win ties). Keys: "count" (as many objects as asked), "color", "shape"
    always; "size", "position", "relation", "background" when asked; "all" when every one of them holds.
    """
    asked, found = attributes["objects"], detection.objects

    def agreement(matching):
        pairs = list(zip(asked, (found[j] for j in matching)))
        return (
            sum(a["color"] == d.color for a, d in pairs),
            sum(a["shape"] == d.shape for a, d in pairs),
            sum(a["size"] == d.size for a, d in pairs),
            sum(d.area for _, d in pairs),
        )

    best = max(itertools.permutations(range(len(found)), min(len(asked), len(found))), key=agreement)
    matched = [found[j] for j in best] + [None] * (len(asked) - len(best))
    pairs = list(zip(asked, matched))

    result = {
        "count": len(found) == len(asked),
        "color": all(d is not None and a["color"] == d.color for a, d in pairs),
        "shape": all(d is not None and a["shape"] == d.shape for a, d in pairs),
    }
    if any(a["size"] is not None for a in asked):
        result["size"] = all(d is not None and a["size"] == d.size for a, d in pairs if a["size"] is not None)
    if attributes["position"] is not None:
        first = matched[0] if matched else None
        result["position"] = first is not None and position_matches(attributes["position"], first.position)
    if attributes["relation"] is not None:
        a, b = matched[:2]
        result["relation"] = None not in (a, b) and relation_holds(attributes["relation"], a.center, b.center)
    if attributes["background"] is not None:
        result["background"] = detection.background == attributes["background"]
    result["all"] = all(result.values())
    return result
