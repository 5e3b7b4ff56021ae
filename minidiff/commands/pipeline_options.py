"""The options the image commands (generate, img2img, inpaint, outpaint, control) share, and their plumbing:
loading the model, reading input pictures, and saving the results.

Not a subcommand itself. Every result is written only after sampling has finished, each PNG atomically
(``minidiff.images.save_png``), so Ctrl-C or an error never leaves a partial file behind.
"""

import argparse
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

SAMPLERS = ("ddpm", "ddim", "euler", "euler_a", "heun", "lms", "dpmpp_2m")  # minidiff.samplers.SAMPLER_NAMES
DTYPES = ("float32", "float16", "bfloat16")
# The bundled model: the folder named by $MINIDIFF_WEIGHTS, else the repository's weights/ beside this package, which
# is there when minidiff runs from its checkout (python -m minidiff, or after pip install -e .). A plain
# `pip install .` copies only the package, so there it takes --model or MINIDIFF_WEIGHTS (see bundled_model).
WEIGHTS_VARIABLE = "MINIDIFF_WEIGHTS"
BUNDLED_MODEL = Path(os.environ.get(WEIGHTS_VARIABLE) or Path(__file__).resolve().parents[2] / "weights")
# Sampling defaults when an option is not given. The bundled model's were chosen by measuring prompt adherence
# with `python -m minidiff evaluate` (weights/README.md has the numbers); other checkpoints get the settings
# Stable Diffusion is usually run with.
BUNDLED_DEFAULTS = dict(sampler="euler_a", steps=20, cfg=5.0)
CHECKPOINT_DEFAULTS = dict(sampler="euler", steps=25, cfg=7.5)


def add_model_arguments(parser):
    parser.add_argument("--model", default=None,
                        help="a diffusers model folder or a single checkpoint file (default: the bundled weights/)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of the networks' weights")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read a pickle checkpoint (.ckpt/.pt/.bin): only for files you trust")


def add_arguments(parser, size=True):
    """The model, prompt and sampling options; ``size`` adds --width/--height."""
    parser.add_argument("prompt", help="what to draw (quote it); an empty string draws unconditionally")
    parser.add_argument("--negative", default=None, help="what to steer away from (default: nothing)")
    parser.add_argument("--steps", type=int, default=None,
                        help="number of sampler steps (default: 20 for the bundled model, else 25)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=None,
                        help="the sampler (default: euler_a for the bundled model, else euler)")
    parser.add_argument("--karras", action=argparse.BooleanOptionalAction, default=None,
                        help="Karras noise levels on or off (euler, heun, lms, dpmpp_2m; default: the model's "
                             "use_karras_sigmas, as in diffusers)")
    parser.add_argument("--eta", type=float, default=0.0, help="ddim only: 0 deterministic, 1 as noisy as ddpm")
    parser.add_argument("--cfg", type=float, default=None,
                        help="classifier-free guidance scale, 1 = off (default: 5 for the bundled model, else 7.5)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    parser.add_argument("--num", type=int, default=1, help="how many images to make")
    parser.add_argument("--clip-skip", type=int, default=None,
                        help="condition on the CLIP layer this many before the last")
    if size:
        parser.add_argument("--width", type=int, default=None, help="width in pixels, a multiple of 8")
        parser.add_argument("--height", type=int, default=None, help="height in pixels, a multiple of 8")
    parser.add_argument("--out", default=None,
                        help="output PNG (with --num N: OUT-0.png ... OUT-(N-1).png); default outputs/COMMAND-SEED.png")
    add_model_arguments(parser)


def add_input_size_arguments(parser):
    parser.add_argument("--width", type=int, default=None, help="resize the input picture(s) to this width first")
    parser.add_argument("--height", type=int, default=None, help="resize the input picture(s) to this height first")


def input_size(args, image_path):
    """(width, height) to resize input pictures to, or None to keep them: either option alone keeps the aspect."""
    if args.width is None and args.height is None:
        return None
    from minidiff.images import load_image

    width, height = load_image(image_path).size
    return args.width or round(width * args.height / height), args.height or round(height * args.width / width)


def load_pipeline(args):
    """The StableDiffusion pipeline for --model (default: the bundled model in weights/)."""
    import torch

    from minidiff.pipelines import StableDiffusion

    model = Path(args.model) if args.model else bundled_model()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return StableDiffusion.from_pretrained(model, dtype=getattr(torch, args.dtype), device=device,
                                           allow_pickle=args.allow_pickle)


def bundled_model():
    """The bundled model's folder (``BUNDLED_MODEL``), or a FileNotFoundError saying in one line what to pass."""
    if (BUNDLED_MODEL / "model_index.json").is_file():
        return BUNDLED_MODEL
    if BUNDLED_MODEL.is_dir():
        raise FileNotFoundError(
            f"the bundled model is not in {BUNDLED_MODEL} yet: train and export it (python -m minidiff train --help) "
            f"or pass --model PATH to a Stable Diffusion folder or checkpoint file"
        )
    raise FileNotFoundError(
        f"no bundled model at {BUNDLED_MODEL} (an installed minidiff does not hold the repository's weights/): "
        f"pass --model PATH to a Stable Diffusion folder or checkpoint file, or set {WEIGHTS_VARIABLE} to the "
        f"weights/ folder of a minidiff checkout"
    )


def sampling_options(args):
    """The keyword arguments every pipeline task takes, from the parsed options (and the model's defaults)."""
    defaults = BUNDLED_DEFAULTS if args.model is None else CHECKPOINT_DEFAULTS
    steps, sampler, cfg = (defaults[k] if getattr(args, k) is None else getattr(args, k) for k in ("steps", "sampler", "cfg"))
    return dict(negative_prompt=args.negative, steps=steps, sampler=sampler, karras=args.karras,
                eta=args.eta, guidance_scale=cfg, seed=args.seed, num_images_per_prompt=args.num,
                clip_skip=args.clip_skip, progress=sys.stderr.isatty())


@contextmanager
def one_line_warnings():
    """Show warnings (e.g. a truncated prompt) as one line each: ``warning: ...``."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *rest, **kw: print(f"warning: {message}", file=sys.stderr)
        yield


def run_task(args, command, task):
    """Load the model, run ``task(pipeline)`` -> PipelineResult, save the images; print where they went."""
    if args.num < 1:
        raise ValueError(f"--num must be at least 1, got {args.num}")
    if args.out is not None and Path(args.out).suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {args.out}")
    with one_line_warnings():
        result = task(load_pipeline(args))
    save_results(result, args.out or f"outputs/{command}-{result.seed}.png")
    return 0


def save_results(result, out):
    """Write each image of ``result`` as a PNG: OUT itself for one image, OUT-i.png for several."""
    from minidiff.images import save_png

    out = Path(out)
    pictures = result.to_pil()
    paths = [out] if len(pictures) == 1 else [out.with_name(f"{out.stem}-{i}.png") for i in range(len(pictures))]
    for picture, path in zip(pictures, paths):
        save_png(picture, path)
        print(f"wrote {path}" + (f" (seed {result.seed})" if result.seed is not None else ""))
