"""Canny edges: on the true outlines and only there, one pixel thin, monotone in the thresholds, with hysteresis."""

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from minidiff.canny import canny, dilate, gaussian_blur, hysteresis, sobel


def disc(size, cx, cy, radius, inside=255.0, outside=0.0):
    """A grey disc with an antialiased outline (coverage ramps over one pixel), float64 (H, W), and its
    signed distance from the outline at each pixel centre."""
    p = np.arange(size) + 0.5
    distance = np.hypot(p[None, :] - cx, p[:, None] - cy) - radius
    coverage = np.clip(0.5 - distance, 0, 1)
    return outside + coverage * (inside - outside), distance


def rectangle(size, x0, y0, x1, y1, inside=200.0, outside=30.0):
    """A filled rectangle covering pixel columns x0..x1-1 and rows y0..y1-1, and each pixel's distance from
    its outline (pixel centres at i + 0.5, the outline on the pixel borders x0, x1, y0, y1)."""
    image = np.full((size, size), outside)
    image[y0:y1, x0:x1] = inside
    p = np.arange(size) + 0.5
    dx = np.maximum(x0 - p, p - x1)[None, :]
    dy = np.maximum(y0 - p, p - y1)[:, None]
    outside_distance = np.hypot(np.maximum(dx, 0), np.maximum(dy, 0))
    return image, np.where((dx < 0) & (dy < 0), np.maximum(dx, dy), outside_distance)


def check_on_outline(edges, distance, tolerance=1.0, coverage=0.95):
    """Every edge pixel lies within ``tolerance`` pixels of the outline; nearly every outline pixel (inside,
    next to the outline) has an edge pixel within one pixel."""
    edges = edges > 0
    assert edges.any()
    assert np.abs(distance[edges]).max() <= tolerance
    outline = (distance < 0) & (distance > -1)
    near = scipy.ndimage.binary_dilation(edges, structure=np.ones((3, 3)))
    assert near[outline].mean() >= coverage


@pytest.mark.parametrize("sigma", [0.0, 1.0, 1.4])
def test_edges_of_a_rectangle_lie_on_its_outline(sigma):
    image, distance = rectangle(64, 12, 17, 50, 41)
    check_on_outline(canny(image.astype(np.uint8), sigma=sigma), distance)


@pytest.mark.parametrize("sigma,l2", [(0.0, False), (1.0, False), (0.0, True)])
def test_edges_of_a_disc_lie_on_its_outline(sigma, l2):
    image, distance = disc(96, 47.3, 50.6, 27.4, inside=220.0, outside=40.0)
    check_on_outline(canny(image.astype(np.uint8), sigma=sigma, l2_gradient=l2), distance)


def test_edges_are_one_pixel_thin_across_a_straight_step():
    image = np.zeros((32, 32), np.uint8)
    image[:, 16:] = 180
    edges = canny(image) > 0
    assert (edges.sum(1) == 1).all()  # every row has exactly one edge pixel
    assert set(np.nonzero(edges)[1]) <= {15, 16}


def test_a_flat_image_has_no_edges():
    for value in (0, 97, 255):
        assert not canny(np.full((40, 50, 3), value, np.uint8)).any()


def test_colour_edges_are_found_where_grey_levels_match():
    """Red (220, 50, 50) and purple (140, 70, 190) have nearly the same grey level; each channel is looked at."""
    image = np.zeros((48, 48, 3), np.uint8)
    image[:] = (140, 70, 190)
    image[10:38, 10:38] = (220, 50, 50)
    grey = image @ np.array([0.299, 0.587, 0.114])
    assert np.abs(grey[0, 0] - grey[20, 20]) < 5
    _, distance = rectangle(48, 10, 10, 38, 38)
    check_on_outline(canny(image), distance)


def test_higher_thresholds_keep_a_subset_of_the_edges():
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(2, 3, 24, 24, generator=generator)
    images = F.interpolate(noise, size=(96, 96), mode="bicubic").clamp(0, 1)  # smooth random images
    previous = None
    for low, high in [(20, 40), (50, 100), (50, 200), (100, 200), (150, 300), (300, 600)]:
        edges = canny(images, low, high) > 0
        if previous is not None:
            assert not (edges & ~previous).any()
        previous = edges
    assert previous.any()


def test_hysteresis_keeps_weak_pixels_joined_to_strong_ones_and_drops_the_rest():
    strong = torch.zeros(1, 1, 12, 12, dtype=torch.bool)
    weak = torch.zeros_like(strong)
    strong[0, 0, 2, 2] = True
    weak[0, 0, 3, 3] = weak[0, 0, 4, 4] = weak[0, 0, 4, 5] = weak[0, 0, 5, 6] = True  # a diagonal chain from it
    weak[0, 0, 9, 8:11] = True  # a weak line touching nothing strong
    edges = hysteresis(strong, weak)
    assert torch.equal(edges, strong | (weak & (torch.arange(12)[:, None] < 8)))


def test_hysteresis_on_an_image_follows_a_step_whose_contrast_fades():
    """A vertical step whose contrast fades slowly from 100 (top) to 30 (bottom), and a separate step of contrast
    30. With thresholds 100/200 on |g| (about 4 x contrast) the faded part is kept, joined to the strong top
    through weak pixels; the separate weak step is dropped."""
    right = np.interp(np.arange(40), [0, 10, 30, 39], [100, 100, 30, 30])[:, None]  # (40, 1) by row
    image = np.zeros((40, 60))
    image[:, 10:] = right
    image[:, 45:] += 30
    edges = canny(image.round().astype(np.uint8), 100, 200) > 0
    assert set(np.nonzero(edges)[1]) <= {9, 10}
    assert edges.any(1).all()  # every row, down to the faded bottom
    edges_without_the_strong_top = canny(image[28:].round().astype(np.uint8), 100, 200)
    assert not edges_without_the_strong_top.any()


def test_input_and_output_conventions():
    image = np.zeros((16, 20, 3), np.uint8)
    image[4:12, 5:15] = 255
    single = canny(image)
    assert isinstance(single, np.ndarray) and single.shape == (16, 20) and single.dtype == np.uint8
    assert set(np.unique(single)) == {0, 255}
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255  # float in [0, 1], (1, 3, H, W)
    batched = canny(batch.repeat(2, 1, 1, 1))
    assert batched.shape == (2, 1, 16, 20) and batched.dtype == torch.uint8
    assert np.array_equal(batched[1, 0].numpy(), single)
    assert np.array_equal(canny(image[..., 0]), single)  # a grey (H, W) image
    with pytest.raises(ValueError, match="low_threshold <= high_threshold"):
        canny(image, 200, 100)
    with pytest.raises(ValueError, match="expects a batch"):
        canny(np.zeros((1, 1, 1, 4, 4)))


def test_dilate_equals_max_pooling():
    x = torch.randn(3, 2, 17, 23, generator=torch.Generator().manual_seed(1))
    assert torch.equal(dilate(x.clamp(min=0)), F.max_pool2d(x.clamp(min=0), 3, stride=1, padding=1))
    mask = x > 1
    assert torch.equal(dilate(mask), F.max_pool2d(mask.float(), 3, stride=1, padding=1) > 0)


def test_sobel_and_blur_match_scipy_in_float64():
    image = np.random.default_rng(0).uniform(0, 255, (30, 40))
    x = torch.from_numpy(image)[None, None]
    gx, gy = sobel(x)
    # scipy's sobel along axis 1 is d/dx; mode="nearest" replicates the border, as we do.
    assert np.abs(gx[0, 0].numpy() - scipy.ndimage.sobel(image, axis=1, mode="nearest")).max() < 1e-9
    assert np.abs(gy[0, 0].numpy() - scipy.ndimage.sobel(image, axis=0, mode="nearest")).max() < 1e-9
    for sigma in (1.0, 2.0):  # scipy's radius int(3 sigma + 0.5) equals our ceil(3 sigma) here
        expected = scipy.ndimage.gaussian_filter(image, sigma, mode="nearest", truncate=3.0)
        got = gaussian_blur(x, sigma)[0, 0].numpy()
        assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-12


@pytest.mark.parametrize("l2", [False, True])
def test_matches_opencv_pixel_for_pixel(l2):
    """OpenCV is no dependency of minidiff; where it is installed, our edges equal cv2.Canny's exactly."""
    cv2 = pytest.importorskip("cv2")
    generator = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(6, 3, 12, 12, generator=generator), size=(80, 80), mode="bicubic")
    noisy = (smooth.clamp(0, 1) * 255 + 8 * torch.randn(smooth.shape, generator=generator)).clamp(0, 255)
    for image in noisy.round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
        for low, high in [(100, 200), (50, 100), (20, 250)]:
            expected = cv2.Canny(np.ascontiguousarray(image), low, high, L2gradient=l2)
            assert np.array_equal(canny(image, low, high, l2_gradient=l2), expected)
