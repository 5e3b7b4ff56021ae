"""``python -m minidiff info PICTURE.png``: print the settings a picture was made with.

    python -m minidiff info outputs/generate-7.png

The image commands write them into each PNG as a ``parameters`` text chunk in the AUTOMATIC1111 web UI's format
(prompt, negative prompt, then ``Steps: 20, Sampler: Euler a, ..., Seed: 7, ...``; see ``outputs``), so this also
reads pictures made with that web UI.
"""

HELP = "print the settings (prompt, seed, sampler...) a PNG was made with"


def add_arguments(parser):
    parser.add_argument("picture", help="a PNG written by an image command (generate, img2img, ...)")


def run(args):
    from minidiff.commands.outputs import read_parameters

    print(read_parameters(args.picture))
    return 0
