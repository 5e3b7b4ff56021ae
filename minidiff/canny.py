"""Canny edge detection (Canny, 1986), batched in PyTorch: the conditioning images of a canny ControlNet.

    1. blur         I <- G_sigma * I                        (sigma=0 skips it, as cv2.Canny does)
    2. gradients    gx = Sobel_x * I,  gy = Sobel_y * I,  |g| = |gx| + |gy|   (or sqrt(gx^2 + gy^2))
    3. thinning     keep a pixel only where |g| is a maximum along the gradient direction (4 directions)
    4. thresholds   strong: |g| > high;  weak: low < |g| <= high
    5. hysteresis   keep the weak pixels joined to a strong pixel through a chain of kept pixels (8-neighbours)

Intensities are on the 0-255 scale and the Sobel filters are unnormalised, so thresholds mean what they mean for
``cv2.Canny(image, 100, 200)``, the preprocessing ControlNet's canny models were trained with; with sigma=0 the
edges are cv2.Canny's, pixel for pixel (tests/test_canny.py checks it when OpenCV is installed). For colour
images each pixel takes the gradient of the channel where it is strongest (as cv2 does), so a red shape on a
purple background, nearly equal in grey level, still has an edge.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])  # d/dx, x to the right
TAN_22_5 = math.tan(math.pi / 8)


def dilate(x):
    """3 x 3 maximum filter of (..., H, W), zero outside: morphological dilation, for bool masks or numbers.

    Two 1-D passes of torch.maximum over shifted views (on CPU far faster than max_pool2d with stride 1).
    """
    p = F.pad(x, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])  # (..., H + 2, W)
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])  # (..., H, W)


def gaussian_blur(x, sigma):
    """Separable Gaussian blur of (B, C, H, W), kernel radius ceil(3 sigma), edges replicated."""
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).repeat(x.shape[1], 1, 1, 1)  # (C, 1, 1, K)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.transpose(2, 3), groups=x.shape[1])


def sobel(x):
    """Sobel gradients (gx, gy) of (B, C, H, W), each (B, C, H, W); edges replicated; gy points down."""
    kernels = torch.stack([SOBEL_X, SOBEL_X.T]).to(x)[:, None].repeat(x.shape[1], 1, 1, 1)  # (2C, 1, 3, 3)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels, groups=x.shape[1])  # (B, 2C, H, W)
    return g[:, 0::2], g[:, 1::2]


def non_maximum_suppression(magnitude, gx, gy):
    """Keep pixels whose magnitude is a maximum along the gradient, quantised to 0, 45, 90 or 135 degrees.

    All (B, 1, H, W); returns a bool mask. A pixel must beat the neighbour before it; along a row or a column
    it need only equal the one after it, so a plateau two pixels wide (an edge exactly between pixels) keeps
    one of them. Diagonally it must beat both. These are cv2.Canny's rules.
    """
    h, w = magnitude.shape[-2:]
    padded = F.pad(magnitude, (1, 1, 1, 1))

    def neighbour(dy, dx):
        return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    ax, ay = gx.abs(), gy.abs()
    across = ay < TAN_22_5 * ax  # gradient within 22.5 degrees of horizontal: compare left and right
    along = ax < TAN_22_5 * ay  # gradient within 22.5 degrees of vertical: compare up and down
    falling = gx * gy > 0  # gradient towards bottom-right (or top-left): compare along that diagonal

    def choose(sign):
        diagonal = torch.where(falling, neighbour(sign, sign), neighbour(sign, -sign))
        return torch.where(across, neighbour(0, sign), torch.where(along, neighbour(sign, 0), diagonal))

    after = choose(1)
    return (magnitude > choose(-1)) & torch.where(across | along, magnitude >= after, magnitude > after)


def hysteresis(strong, weak):
    """Grow ``strong`` (bool, (..., H, W)) through ``weak`` pixels it touches (8-neighbours) until nothing changes.

    Returns strong | (weak pixels connected to strong ones); isolated weak pixels are dropped.
    """
    edges = strong
    candidates = strong | weak
    while True:
        grown = dilate(edges) & candidates
        if torch.equal(grown, edges):
            return edges
        edges = grown


def _as_batch(images):
    """(B, C, H, W) float on the 0-255 scale, and whether the input was one image."""
    x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
    scale = 1.0 if x.dtype == torch.uint8 else 255.0
    if x.ndim == 2:
        return x[None, None].float() * scale, True
    if x.ndim == 3:
        return x.permute(2, 0, 1)[None].float() * scale, True
    if x.ndim == 4:
        return x.float() * scale, False
    raise ValueError(
        f"canny expects a batch (B, C, H, W), one image (H, W, C) or a grey image (H, W); got shape {tuple(x.shape)}."
    )


@torch.no_grad()
def canny(images, low_threshold=100, high_threshold=200, sigma=0.0, l2_gradient=False):
    """Canny edges, 255 on an edge and 0 elsewhere, uint8 (like cv2.Canny).

    images: uint8 (0-255) or float (0-1): a batch (B, C, H, W), or one image (H, W, C) or (H, W), as torch
    or NumPy. Returns (B, 1, H, W) for a batch, (H, W) for one image, as torch (NumPy if given NumPy).
    Thresholds apply to |gx| + |gy| (sqrt(gx^2 + gy^2) with l2_gradient=True) of unnormalised 3x3 Sobel
    filters on 0-255 intensities. sigma: Gaussian blur before the gradients, in pixels; 0 (the default,
    as in cv2.Canny and ControlNet's preprocessing) skips it; 1 to 1.4 is the textbook choice for noisy photos.
    """
    if not 0 <= low_threshold <= high_threshold:
        raise ValueError(f"Need 0 <= low_threshold <= high_threshold; got {low_threshold} and {high_threshold}.")
    x, single = _as_batch(images)
    if sigma > 0:
        x = gaussian_blur(x, sigma)
    gx, gy = sobel(x)  # (B, C, H, W) each
    magnitude = torch.sqrt(gx**2 + gy**2) if l2_gradient else gx.abs() + gy.abs()
    magnitude, channel = magnitude.max(1, keepdim=True)  # the strongest channel at each pixel, (B, 1, H, W)
    gx, gy = gx.gather(1, channel), gy.gather(1, channel)

    thin = non_maximum_suppression(magnitude, gx, gy)
    edges = hysteresis(thin & (magnitude > high_threshold), thin & (magnitude > low_threshold))
    edges = edges.to(torch.uint8) * 255
    if single:
        edges = edges[0, 0]
    return edges.numpy() if isinstance(images, np.ndarray) else edges
