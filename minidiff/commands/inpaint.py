"""``python -m minidiff inpaint PROMPT --image PICTURE --mask MASK``: repaint the white part of the mask.

    python -m minidiff inpaint "a green triangle" --image in.png --mask mask.png --seed 0

The mask is a picture of the same size: white (>= 50% grey) is repainted, black is kept. Works with any model
(latent blending) and better with an inpainting model (a U-Net with 9 input channels).
"""

from minidiff.commands import pipeline_options as options

HELP = "repaint the masked part of a picture"


def add_arguments(parser):
    options.add_arguments(parser, size=False)
    parser.add_argument("--image", required=True, help="the picture to repaint (PNG or JPEG)")
    parser.add_argument("--mask", required=True, help="same size as the image: white = repaint, black = keep")
    parser.add_argument("--strength", type=float, default=1.0,
                        help="1 repaints from pure noise; lower values keep some of the old content")
    options.add_input_size_arguments(parser)


def run(args):
    from minidiff.images import load_image, load_mask

    size = options.input_size(args, args.image)
    image, mask = load_image(args.image, size=size), load_mask(args.mask, size=size)
    return options.run_task(args, "inpaint", lambda sd: sd.inpaint(
        args.prompt, image, mask, strength=args.strength, **options.sampling_options(args)))
