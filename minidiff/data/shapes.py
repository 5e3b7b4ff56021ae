"""The captioned-shapes world that minidiff's bundled model learns: random scenes, their captions, a batched renderer.

A scene is a flat background with one or two objects (a shape in a colour, small or large). A single object sits
in one of nine places (top left ... bottom right); two objects stand in a relation (above, below, left of,
right of) with a clear gap between them. Coordinates are fractions of the image side, so one scene renders
at any resolution.

Rendering uses a signed distance function per shape, d(x, y) in pixels, negative inside and positive outside.
A pixel's coverage is  alpha = clamp(1/2 - d, 0, 1):  1 inside, 0 outside and a one-pixel ramp across the edge,
which antialiases the outline. Objects never overlap, so compositing is a sum:

    image = background + sum_k alpha_k * (colour_k - background)

Every pixel of a whole batch is computed at once in torch, on any device, so training can draw fresh scenes
every step (``sample_batch``). Scenes depend only on the seed.
"""

import dataclasses
import math

import numpy as np
import torch

from minidiff.data.captions import COLORS, POSITIONS, RELATIONS, SHAPES, SIZES, make_caption, pick

RGB = {
    "red": (220, 50, 50),
    "green": (50, 170, 70),
    "blue": (50, 90, 220),
    "yellow": (240, 210, 50),
    "purple": (140, 70, 190),
    "orange": (245, 140, 40),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
assert tuple(RGB) == COLORS

RADIUS = {"small": (0.07, 0.095), "large": (0.15, 0.19)}  # ranges of r, as fractions of the image side
SIZE_THRESHOLD = 0.12  # between the two ranges: the detector calls an object with r above this "large"
REACH = 1.2  # every shape lies inside the disc of radius REACH * r around its centre
GAP = 0.05  # least space between the reach discs of two objects
EDGE = 0.01  # least space between a reach disc and the image border
CELL_RANGE = ((0.0, 0.28), (0.42, 0.58), (0.72, 1.0))  # where a centre may lie in the 1st, 2nd, 3rd third
POSITION_CELL = dict(zip(POSITIONS, [(row, col) for row in range(3) for col in range(3)]))  # name -> (row, col)


def position_name(center):
    """Which of the nine cells (thirds of the image across and down) holds a point (x, y): 'top left', ..."""
    col, row = (min(max(int(3 * c), 0), 2) for c in center)
    return POSITIONS[3 * row + col]


# Signed distance functions: x (n, 1, W) and y (n, H, 1) are pixel offsets from the centre (y points down),
# r (n, 1, 1) is the radius in pixels; each returns d (n, H, W). Inside the shape d < 0.
def circle_sdf(x, y, r):
    return torch.sqrt(x * x + y * y) - r


def square_sdf(x, y, r):
    return torch.maximum(x.abs(), y.abs()) - 0.85 * r  # half side 0.85 r: corners at distance 1.2 r


def triangle_sdf(x, y, r):
    # Equilateral, point up, circumradius 1.2 r: inside all three edges, each at distance (inradius) 0.6 r.
    return torch.maximum(y, math.sin(math.pi / 3) * x.abs() - 0.5 * y) - 0.6 * r


def star_sdf(x, y, r):
    # Five points at radius 1.2 r, valleys at 0.6 r. Fold the plane by the star's symmetry into the wedge
    # between a tip (angle 0) and a valley (36 degrees); there the outline is one straight edge, tip -> valley.
    wedge = math.pi / 5
    angle = torch.atan2(x, -y)  # 0 straight up
    folded = (torch.remainder(angle + wedge, 2 * wedge) - wedge).abs()  # (n, H, W) in [0, wedge]
    rho = torch.sqrt(x * x + y * y)
    outer, inner = 1.2, 0.6
    normal = (inner * math.sin(wedge), outer - inner * math.cos(wedge))  # outward normal of the edge, unnormalised
    length = math.hypot(*normal)
    distance_to_edge = rho * (normal[0] * torch.cos(folded) + normal[1] * torch.sin(folded)) / length
    return distance_to_edge - r * outer * normal[0] / length


def heart_sdf(x, y, r):
    # A square standing on a corner with a half-disc on each upper edge; D is its centre-to-corner distance.
    # The heart's centroid lies 0.313 D above the square's centre: shift so that it sits at the origin.
    half_diagonal = 0.9 * r
    y = y - 0.3132 * half_diagonal
    diamond = (x.abs() + y.abs() - half_diagonal) / math.sqrt(2)
    lobes = torch.sqrt((x.abs() - half_diagonal / 2) ** 2 + (y + half_diagonal / 2) ** 2) - half_diagonal / math.sqrt(2)
    return torch.minimum(diamond, lobes)


def ring_sdf(x, y, r):
    return (torch.sqrt(x * x + y * y) - 0.775 * r).abs() - 0.225 * r  # outer radius r, hole radius 0.55 r


SDF = {"circle": circle_sdf, "square": square_sdf, "triangle": triangle_sdf,
       "star": star_sdf, "heart": heart_sdf, "ring": ring_sdf}
assert tuple(SDF) == SHAPES


@dataclasses.dataclass
class SceneObject:
    shape: str
    color: str
    size: str  # "small" or "large"
    center: tuple  # (x, y) as fractions of the image side, y down
    radius: float  # as a fraction of the image side

    @property
    def position(self):
        return position_name(self.center)


@dataclasses.dataclass
class Scene:
    objects: list  # one or two SceneObject
    background: str
    relation: str | None  # how objects[0] stands to objects[1] ("above", ...), None for a single object
    caption: str
    attributes: dict  # what the caption states, in the format of captions.parse_prompt


def _uniform(rng, low, high):
    return low + (high - low) * rng.random()


def _border(radius):
    return REACH * radius + EDGE  # least distance from a centre to the image border


def _place_in_cell(rng, radius, position):
    """A centre (x, y) inside the named cell, far enough from the cell's edges to be unambiguous."""
    row, col = POSITION_CELL[position]
    m = _border(radius)
    return tuple(_uniform(rng, max(low, m), min(high, 1 - m)) for low, high in (CELL_RANGE[col], CELL_RANGE[row]))


def _place_pair(rng, radius_a, radius_b, relation):
    """Centres for objects a, b with ``a <relation> b``: apart by at least the gap along the relation's axis,
    and offset across it by at most half that distance, so the relation is clear."""
    ma, mb = _border(radius_a), _border(radius_b)
    apart = _uniform(rng, REACH * (radius_a + radius_b) + GAP, 1 - ma - mb)
    first = _uniform(rng, ma, 1 - mb - apart) if relation in ("above", "left of") else _uniform(rng, mb + apart, 1 - ma)
    second = first + apart if relation in ("above", "left of") else first - apart
    across_a = _uniform(rng, ma, 1 - ma)
    across_b = _uniform(rng, max(mb, across_a - apart / 2), min(1 - mb, across_a + apart / 2))
    if relation in ("above", "below"):
        return (across_a, first), (across_b, second)
    return (first, across_a), (second, across_b)


def sample_scene(rng=None):
    """A random Scene with its caption. rng: a numpy Generator, or a seed for one (None: fresh entropy).

    One or two objects (never the background's colour; two objects differ in colour or shape). The caption
    names the objects' colour and shape always, and each size, the position, the relation and the
    background only sometimes; it never states anything the image does not show.
    """
    rng = np.random.default_rng(rng)
    background = "white" if rng.random() < 0.4 else pick(rng, COLORS)
    count, objects = (1 if rng.random() < 0.5 else 2), []
    while len(objects) < count:
        color, shape, size = pick(rng, COLORS), pick(rng, SHAPES), pick(rng, SIZES)
        if color == background or any(o.color == color and o.shape == shape for o in objects):
            continue
        objects.append(SceneObject(shape, color, size, (0.5, 0.5), _uniform(rng, *RADIUS[size])))

    relation = position = None
    if len(objects) == 1:
        position = pick(rng, POSITIONS)
        objects[0].center = _place_in_cell(rng, objects[0].radius, position)
    else:
        relation = pick(rng, RELATIONS)
        objects[0].center, objects[1].center = _place_pair(rng, objects[0].radius, objects[1].radius, relation)

    attributes = {
        "objects": [{"color": o.color, "shape": o.shape, "size": o.size if rng.random() < 0.4 else None}
                    for o in objects],
        "position": position if rng.random() < 0.6 else None,
        "relation": relation if rng.random() < 0.85 else None,
        "background": background if rng.random() < 0.35 else None,
    }
    return Scene(objects, background, relation, make_caption(attributes, rng), attributes)


@torch.no_grad()
def render_scenes(scenes, size=128, device="cpu"):
    """Draw scenes as float32 images (B, 3, size, size) in [0, 1], on ``device``, every object of the batch at once.

    Each object's coverage is evaluated only in a square window around it (wide enough for the largest object
    of the batch), then written into the object's slot: image b has slots 2b and 2b + 1, left empty when
    it has one object. Compositing is then one batched matrix product over the two slots.
    """
    objects = [(2 * b + k, o) for b, scene in enumerate(scenes) for k, o in enumerate(scene.objects)]
    slot = torch.tensor([s for s, _ in objects], device=device)  # (N,)
    geometry = torch.tensor([[*o.center, o.radius] for _, o in objects], device=device) * size  # (N, 3) pixels
    shape_id = torch.tensor([SHAPES.index(o.shape) for _, o in objects], device=device)
    background = torch.tensor([RGB[s.background] for s in scenes], device=device, dtype=torch.float32) / 255
    delta = torch.zeros(len(scenes) * 2, 3, device=device)  # colour minus background, per slot
    delta[slot] = torch.tensor([RGB[o.color] for _, o in objects], device=device) / 255 - background[slot // 2]

    # Coverage reaches half a pixel past the outline and window corners are rounded: 2 pixels of slack a side.
    window = min(size, math.ceil(2 * REACH * float(geometry[:, 2].max())) + 4)
    corner = (geometry[:, :2] - window / 2).round().clamp(0, size - window).long()  # (N, 2) window's top-left pixel
    offsets = torch.arange(window, device=device)
    cols = corner[:, 0, None] + offsets  # (N, window) pixel columns of each window
    rows = corner[:, 1, None] + offsets

    alpha = torch.zeros(len(scenes) * 2, size, size, device=device)  # (2B, H, W) coverage per slot
    for i, sdf in enumerate(SDF.values()):
        idx = (shape_id == i).nonzero()[:, 0]
        if len(idx) == 0:
            continue
        cx, cy, r = geometry[idx, :, None, None].unbind(1)  # (n, 1, 1) each
        x = cols[idx, None, :] + 0.5 - cx  # (n, 1, window) offsets of pixel centres from the object's centre
        y = rows[idx, :, None] + 0.5 - cy  # (n, window, 1)
        coverage = (0.5 - sdf(x, y, r)).clamp_(0, 1)  # (n, window, window)
        alpha[slot[idx, None, None], rows[idx, :, None], cols[idx, None, :]] = coverage

    images = torch.baddbmm(  # background + sum over the two slots of alpha * (colour - background)
        background[:, :, None].expand(-1, -1, size * size),
        delta.view(-1, 2, 3).transpose(1, 2),  # (B, 3, 2)
        alpha.view(-1, 2, size * size),  # (B, 2, H*W)
    )
    return images.view(-1, 3, size, size)


def numpy_generator(rng):
    """A numpy Generator from a torch.Generator (one number is drawn from it as the seed, so what follows depends
    only on the torch generator's state), from a numpy Generator (returned as it is) or from an int seed."""
    if isinstance(rng, torch.Generator):
        rng = int(torch.randint(2**62, (1,), generator=rng, device=rng.device))
    return np.random.default_rng(rng)


def sample_batch(rng, batch_size, size=128, device="cpu"):
    """A fresh training batch: (images (B, 3, size, size) float32 in [-1, 1] on device, captions, scenes).

    rng: a torch.Generator (one number is drawn from it to seed the scenes, so the batch depends only on the
    generator's state), a numpy Generator, or an int seed.
    """
    rng = numpy_generator(rng)
    scenes = [sample_scene(rng) for _ in range(batch_size)]
    images = render_scenes(scenes, size, device).mul_(2).sub_(1)
    return images, [scene.caption for scene in scenes], scenes


def make_dataset_grid(seed=0, rows=3, cols=4, size=128):
    """A matplotlib Figure of rows x cols random scenes titled with their captions (for lessons, the model card)."""
    import textwrap

    import matplotlib.pyplot as plt

    images, captions, _ = sample_batch(seed, rows * cols, size)
    figure, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(((image + 1) / 2).permute(1, 2, 0).numpy())
        ax.set_title(textwrap.fill(caption, 26), fontsize=8)
        ax.axis("off")
    figure.tight_layout()
    return figure
