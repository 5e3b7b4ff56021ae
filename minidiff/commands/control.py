"""``python -m minidiff control PROMPT --image PICTURE``: draw a new picture along the edges of another
(needs a model with a ControlNet, such as the bundled one).

    python -m minidiff control "a purple star" --image in.png --seed 0            # Canny edges of in.png
    python -m minidiff control "a purple star" --control edges.png --control-scale 0.8
    python -m minidiff control "a purple star" --image in.png --edges-out edges.png   # also save the edge map

The edge map is white lines on black, as ControlNet's canny models were trained with.
"""

from pathlib import Path

from minidiff.commands import pipeline_options as options

HELP = "draw along the edges of a picture (ControlNet)"


def add_arguments(parser):
    options.add_arguments(parser, size=False)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="a picture to take Canny edges from")
    source.add_argument("--control", help="a ready edge map (white edges on black)")
    parser.add_argument("--control-scale", type=float, default=1.0, help="strength of the ControlNet's guidance")
    parser.add_argument("--control-start", type=float, default=0.0, help="fraction of the steps before it acts")
    parser.add_argument("--control-end", type=float, default=1.0, help="fraction of the steps after which it stops")
    parser.add_argument("--canny-low", type=float, default=100, help="Canny's low threshold (0-255 scale)")
    parser.add_argument("--canny-high", type=float, default=200, help="Canny's high threshold (0-255 scale)")
    parser.add_argument("--edges-out", default=None, help="also save the edge map used, as this PNG")
    options.add_input_size_arguments(parser)


def run(args):
    import numpy as np
    from PIL import Image

    from minidiff.canny import canny
    from minidiff.images import save_png

    with options.one_line_warnings():
        picture = options.input_picture(args, args.image or args.control)
    edges = picture.convert("L") if args.control else Image.fromarray(
        canny(np.array(picture), args.canny_low, args.canny_high))
    if not np.asarray(edges).any() and args.control:
        raise ValueError(f"the edge map {Path(args.control).resolve()} is all black: give white edges on black, or "
                         f"a picture with --image to take its edges")
    if not np.asarray(edges).any():
        raise ValueError(f"Canny found no edges in {Path(args.image).resolve()} with --canny-low {args.canny_low:g} "
                         f"and --canny-high {args.canny_high:g}: lower them, or give a picture with visible outlines")
    if args.edges_out:
        save_png(edges, args.edges_out)
        print(f"wrote {args.edges_out}")
    return options.run_task(args, "control", lambda sd: sd.control(
        args.prompt, edges, controlnet_scale=args.control_scale, guidance_start=args.control_start,
        guidance_end=args.control_end, **options.sampling_options(args)))
