"""``python -m minidiff inpaint PROMPT --image PICTURE --mask MASK``: repaint the white part of the mask.

    python -m minidiff inpaint "a green triangle" --image in.png --mask mask.png --seed 0
    python -m minidiff inpaint "a yellow star" --image in.png --mask-box 64,32,128,96 --seed 0

The mask is a picture of the same size: white (>= 50% grey) is repainted, black is kept; ``--mask-box`` repaints
a rectangle instead. Works with any model (latent blending) and better with an inpainting model (a U-Net with 9
input channels). Afterwards the black part is pasted back from the picture with a feathered seam
(``minidiff.pipelines.paste_back``), so it stays exactly as it was; ``--no-paste-back`` keeps the pipeline's
output as it is (as diffusers gives it), where the VAE has redrawn the kept part too.
"""

import argparse
import dataclasses

from minidiff.commands import pipeline_options as options

HELP = "repaint the masked part of a picture"


def add_arguments(parser):
    options.add_arguments(parser, size=False)
    parser.add_argument("--image", required=True, help="the picture to repaint (PNG or JPEG)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--mask", help="same size as the image: white = repaint, black = keep")
    where.add_argument("--mask-box", metavar="LEFT,TOP,RIGHT,BOTTOM",
                       help="repaint this rectangle of the image (pixels; right and bottom excluded) instead")
    parser.add_argument("--strength", type=float, default=1.0,
                        help="1 repaints from pure noise; lower values keep some of the old content")
    add_paste_back_argument(parser)
    options.add_input_size_arguments(parser)


def add_paste_back_argument(parser):
    parser.add_argument("--paste-back", action=argparse.BooleanOptionalAction, default=True,
                        help="paste the kept part of the picture back over the result, blended over 8 px at the "
                             "mask's edge (default: on; --no-paste-back gives the pipeline's pixels, as diffusers)")


def box_mask(box, width, height):
    """--mask-box "LEFT,TOP,RIGHT,BOTTOM" -> mask (1, 1, height, width): 1 inside the rectangle, 0 outside."""
    import torch

    try:
        left, top, right, bottom = (int(v) for v in box.split(","))
    except ValueError:
        raise ValueError(f"--mask-box takes four whole numbers LEFT,TOP,RIGHT,BOTTOM, got {box!r}") from None
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise ValueError(f"--mask-box {box} is not a rectangle inside the {width}x{height} px picture: give "
                         f"0 <= LEFT < RIGHT <= {width} and 0 <= TOP < BOTTOM <= {height}")
    mask = torch.zeros(1, 1, height, width)
    mask[..., top:bottom, left:right] = 1
    return mask


def run(args):
    from minidiff.images import as_image_tensor, as_mask_tensor, load_image, load_mask
    from minidiff.pipelines.paste_back import paste_back

    size = options.input_size(args, args.image)
    image = load_image(args.image, size=size)
    if args.mask_box is not None:
        mask = box_mask(args.mask_box, *image.size)
    else:
        mask = as_mask_tensor(load_mask(args.mask, size=size))  # (1, 1, H, W) in {0, 1}
        if not mask.any():
            raise ValueError(f"the mask {args.mask} is all black (no pixel of 50% grey or brighter), so there is "
                             f"nothing to repaint; paint white where the picture should change")

    def task(sd):
        result = sd.inpaint(args.prompt, image, mask, strength=args.strength, **options.sampling_options(args))
        if not args.paste_back:
            return result
        return dataclasses.replace(result, images=paste_back(result.images, as_image_tensor(image), mask))

    return options.run_task(args, "inpaint", task)
