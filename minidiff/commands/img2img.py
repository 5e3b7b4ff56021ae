"""``python -m minidiff img2img PROMPT --image PICTURE``: redraw a picture following a prompt (SDEdit).

    python -m minidiff img2img "a blue square" --image in.png --strength 0.6 --seed 0
    python -m minidiff img2img "a blue square" --image photo.jpg --width 512      # resize the input first

--strength 0 would keep the picture, 1 ignores it; 0.5-0.8 keeps its layout and changes its content.
"""

from minidiff.commands import pipeline_options as options

HELP = "redraw a picture following a prompt (image to image)"


def add_arguments(parser):
    options.add_arguments(parser, size=False)
    parser.add_argument("--image", required=True, help="the picture to start from (PNG or JPEG)")
    parser.add_argument("--strength", type=float, default=0.75, help="how much to change it, in (0, 1]")
    options.add_input_size_arguments(parser)


def run(args):
    with options.one_line_warnings():
        image = options.input_picture(args, args.image)
    return options.run_task(args, "img2img", lambda sd: sd.image_to_image(
        args.prompt, image, strength=args.strength, **options.sampling_options(args)))
