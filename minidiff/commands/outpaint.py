"""``python -m minidiff outpaint PROMPT --image PICTURE --left N ...``: extend a picture beyond its borders.

    python -m minidiff outpaint "a red circle on a white background" --image in.png --right 64 --seed 0

The picture is padded by the given numbers of pixels (the new size must be a multiple of 8) and the new border is
inpainted.
"""

from minidiff.commands import pipeline_options as options

HELP = "extend a picture beyond its borders (outpainting)"


def add_arguments(parser):
    options.add_arguments(parser, size=False)
    parser.add_argument("--image", required=True, help="the picture to extend (PNG or JPEG)")
    for side in ("left", "right", "top", "bottom"):
        parser.add_argument(f"--{side}", type=int, default=0, help=f"pixels to add on the {side}")
    parser.add_argument("--strength", type=float, default=1.0, help="1 paints the border from pure noise")
    options.add_input_size_arguments(parser)


def run(args):
    from minidiff.images import load_image

    image = load_image(args.image, size=options.input_size(args, args.image))
    return options.run_task(args, "outpaint", lambda sd: sd.outpaint(
        args.prompt, image, left=args.left, right=args.right, top=args.top, bottom=args.bottom,
        strength=args.strength, **options.sampling_options(args)))
