"""Pictures in and out: PIL images <-> tensors, loading images and masks, and saving PNGs safely.

Inside minidiff an image is a float tensor (B, 3, H, W) with values in [0, 1]; the VAE wants [-1, 1]
(``x * 2 - 1``) and the pipelines hand back [0, 1]. A mask is (B, 1, H, W) with 1 where the picture is to be
repainted and 0 where it is kept. Converting to 8-bit rounds to the nearest level: ``round(x * 255)``.

``save_png`` writes to a temporary file in the same folder and renames it into place (an atomic step on every
operating system), so an interrupted run never leaves half a PNG behind.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from minidiff.atomic import atomic_file


def pil_to_tensor(image, mode="RGB"):
    """PIL image -> float32 tensor (1, C, H, W) in [0, 1]: C = 3 for mode "RGB", 1 for mode "L" (grayscale).

    The tensor is a transposed view of the (H, W, C) pixel array, so it is laid out channels-last, as diffusers'
    image processor leaves a PIL picture. The layout changes no value, but a convolution picks its kernel by it,
    and kernels round differently: keeping diffusers' layout keeps the VAE's numbers equal to the last bit."""
    array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0  # (H, W, 3) or (H, W)
    tensor = torch.from_numpy(array.reshape(1, *array.shape[:2], -1))  # (1, H, W, C)
    return tensor.permute(0, 3, 1, 2)  # (1, C, H, W), channels-last


def tensor_to_pil(images):
    """Float tensor (B, C, H, W) or (C, H, W) in [0, 1] -> list of PIL images (RGB for C = 3, "L" for C = 1)."""
    images = images.detach().float().cpu()
    images = images[None] if images.ndim == 3 else images
    array = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # (B, H, W, C)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]


def as_image_tensor(image, channels=3):
    """A PIL image or a tensor (C, H, W) / (1, C, H, W) in [0, 1] -> float32 tensor (1, channels, H, W).

    One-channel tensors are repeated to ``channels`` (an edge map can be given as a grayscale picture).
    """
    if isinstance(image, Image.Image):
        return pil_to_tensor(image, "RGB" if channels == 3 else "L")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a PIL image or a torch tensor, got {type(image).__name__}")
    image = image[None] if image.ndim == 3 else image
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] not in (1, channels):
        raise ValueError(
            f"expected one image as a tensor of shape (C, H, W) or (1, C, H, W) with C = {channels} (or 1), "
            f"got shape {tuple(image.shape)}; to use several images, call the pipeline once per image"
        )
    if image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"image values must lie in [0, 1], found [{image.min().item():.3g}, {image.max().item():.3g}]; "
            f"a [-1, 1] tensor becomes [0, 1] with (x + 1) / 2"
        )
    return image.float().expand(-1, channels, -1, -1)


def as_mask_tensor(mask):
    """A mask as PIL image (any mode, read as grayscale) or tensor (H, W) / (1, H, W) / (1, 1, H, W) -> binary
    float32 tensor (1, 1, H, W): 1 where the gray value is >= 0.5 (repaint), 0 below (keep)."""
    if isinstance(mask, Image.Image):
        mask = pil_to_tensor(mask, "L")
    elif isinstance(mask, torch.Tensor):
        if mask.ndim < 2 or mask.numel() != mask.shape[-2] * mask.shape[-1]:
            raise ValueError(
                f"a mask tensor must hold one channel: shape (H, W), (1, H, W) or (1, 1, H, W), got {tuple(mask.shape)}"
            )
        mask = mask.float().reshape(1, 1, *mask.shape[-2:])
    else:
        raise TypeError(f"expected the mask as a PIL image or a torch tensor, got {type(mask).__name__}")
    return (mask >= 0.5).float()


def load_image(path, mode="RGB", size=None):
    """Read an image file as a PIL image in ``mode``; ``size`` = (width, height) resizes it (Lanczos filter)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}; check the path")
    try:
        with Image.open(path) as opened:
            image = opened.convert(mode)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"could not read {path} as an image ({exc}); give a PNG or JPEG file") from None
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), resample=Image.Resampling.LANCZOS)
    return image


def load_mask(path, size=None):
    """Read a mask file (white = repaint, black = keep) as a grayscale PIL image; ``size`` = (width, height)."""
    return load_image(path, mode="L", size=size)


def save_png(image, path, pnginfo=None):
    """Write a PIL image to ``path`` as PNG, atomically: a temporary file in the same folder, then a rename.

    Missing folders are created. If anything fails (or Ctrl-C arrives) before the rename, no file appears at
    ``path`` and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        image.save(f, format="PNG", pnginfo=pnginfo)  # pnginfo: text chunks (PIL's PngInfo)
    return path
