"""``python -m minidiff generate PROMPT``: text to image.

    python -m minidiff generate "a red circle left of a blue square" --seed 0
    python -m minidiff generate "a red circle" --negative "blurry" --steps 30 --sampler dpmpp_2m --karras --num 4
    python -m minidiff generate "a cat" --model sd15/ --width 512 --height 512 --device cuda --dtype float16
"""

from minidiff.commands import pipeline_options as options

HELP = "draw an image from a text prompt"


def add_arguments(parser):
    options.add_arguments(parser)


def run(args):
    with options.one_line_warnings():
        width, height = options.output_size(args)
    return options.run_task(args, "generate", lambda sd: sd.text_to_image(
        args.prompt, width=width, height=height, **options.sampling_options(args)))
