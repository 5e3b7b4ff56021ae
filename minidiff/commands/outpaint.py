"""``python -m minidiff outpaint PROMPT --image PICTURE --left N ...``: extend a picture beyond its borders.

    python -m minidiff outpaint "a red circle on a white background" --image in.png --right 64 --seed 0

The picture is padded by the given numbers of pixels (the new size must be a multiple of 8) and the new border is
inpainted. Afterwards the original picture is pasted back over its place, with a feathered seam into the new
border (``minidiff.pipelines.paste_back``); ``--no-paste-back`` keeps the pipeline's output as it is.
"""

import dataclasses

from minidiff.commands import pipeline_options as options
from minidiff.commands.inpaint import add_paste_back_argument

HELP = "extend a picture beyond its borders (outpainting)"
SIDES = ("left", "right", "top", "bottom")


def add_arguments(parser):
    options.add_arguments(parser, size=False)
    parser.add_argument("--image", required=True, help="the picture to extend (PNG or JPEG)")
    for side in SIDES:
        parser.add_argument(f"--{side}", type=int, default=0, help=f"pixels to add on the {side}")
    parser.add_argument("--strength", type=float, default=1.0, help="1 paints the border from pure noise")
    add_paste_back_argument(parser)
    options.add_input_size_arguments(parser)


def run(args):
    from minidiff.images import as_image_tensor, load_image
    from minidiff.pipelines.paste_back import paste_back_outpainting

    image = load_image(args.image, size=options.input_size(args, args.image))
    pads = {side: getattr(args, side) for side in SIDES}

    def task(sd):
        result = sd.outpaint(args.prompt, image, **pads, strength=args.strength, **options.sampling_options(args))
        if not args.paste_back:
            return result
        return dataclasses.replace(result, images=paste_back_outpainting(result.images, as_image_tensor(image), **pads))

    return options.run_task(args, "outpaint", task)
