"""The options the image commands (generate, img2img, inpaint, outpaint, control) share, and their plumbing:
loading the model, reading input pictures, and running the task once per picture (``outputs`` saves them).

Not a subcommand itself. Every result is written only after sampling has finished, each PNG atomically
(``minidiff.images.save_png``), so Ctrl-C or an error never leaves a partial file behind.
"""

import argparse
import os
import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from minidiff import sampler_names
from minidiff.commands import model_settings

SAMPLERS = tuple(sampler_names.NAMES)  # minidiff.samplers.SAMPLER_NAMES, read without importing torch
SIGMA_SPACINGS = sampler_names.SPACING_SUFFIXES
DTYPES = ("float32", "float16", "bfloat16")
# The bundled model: the folder named by $MINIDIFF_WEIGHTS, else the repository's weights/ beside this package, which
# is there when minidiff runs from its checkout (python -m minidiff, or after pip install -e .). A plain
# `pip install .` copies only the package, so there it takes --model or MINIDIFF_WEIGHTS (see bundled_model).
WEIGHTS_VARIABLE = "MINIDIFF_WEIGHTS"
BUNDLED_MODEL = Path(os.environ.get(WEIGHTS_VARIABLE) or Path(__file__).resolve().parents[2] / "weights")
# Sampling defaults when an option is not given come from the model folder's minidiff_settings.json
# (commands/model_settings.py), for generate and the other image commands as for evaluate. The bundled model's
# (weights/minidiff_settings.json) were chosen by measuring prompt adherence with `python -m minidiff evaluate`
# (weights/README.md has the numbers); `train export` writes them (SETTINGS in minidiff/train/bundled.py).
DEVICES = "cpu, cuda, cuda:N (the N-th GPU) or mps"


def add_model_arguments(parser):
    parser.add_argument("--model", default=None,
                        help="a diffusers model folder or a single checkpoint file (default: the bundled weights/)")
    parser.add_argument("--device", type=device_name, default=None,
                        help="cpu or cuda (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of the networks' weights")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read a pickle checkpoint (.ckpt/.pt/.bin): only for files you trust")


def add_arguments(parser, size=True):
    """The model, prompt and sampling options; ``size`` adds --width/--height."""
    parser.add_argument("prompt", help="what to draw (quote it); an empty string draws unconditionally")
    parser.add_argument("--negative", default=None, help="what to steer away from (default: nothing)")
    parser.add_argument("--steps", type=int, default=None,
                        help="number of sampler steps (default: the model's settings file, else 25)")
    parser.add_argument("--sampler", type=sampler_name, default=None,
                        help="the sampler: one of " + ", ".join(SAMPLERS) + ", or its A1111/ComfyUI name "
                             "(\"DPM++ 2M Karras\", \"Euler a\"; `schedule --list` shows them); default: the "
                             "model's settings file, else euler. Some need more steps than others: a model's settings "
                             "file lists the fewest each needs with it (min_steps; " + bundled_min_steps() + ")")
    parser.add_argument("--karras", action=argparse.BooleanOptionalAction, default=None,
                        help="Karras noise levels on or off (the samplers that have them; default: the model's "
                             "use_karras_sigmas, as in diffusers)")
    parser.add_argument("--sigmas", choices=SIGMA_SPACINGS, default=None,
                        help="the σ spacing: karras, exponential or beta (default: the sampler name's, else the "
                             "model's use_*_sigmas)")
    parser.add_argument("--eta", type=float, default=0.0, help="ddim only: 0 deterministic, 1 as noisy as ddpm")
    parser.add_argument("--cfg", type=guidance_scale, default=None,
                        help="classifier-free guidance scale, 1 = off (default: the model's settings file, else 7.5)")
    parser.add_argument("--seed", type=int, default=None,
                        help="the first picture's seed; picture k gets SEED + k (default, or -1: a new one, printed)")
    parser.add_argument("--num", type=int, default=1,
                        help="how many pictures to make, one seed each: --seed SEED+k --num 1 remakes picture k")
    parser.add_argument("--grid", action="store_true",
                        help="also write a contact sheet of the pictures beside them (OUT-grid.png)")
    parser.add_argument("--clip-skip", type=int, default=None,
                        help="condition on the CLIP layer this many before the last")
    if size:
        for side in ("width", "height"):
            parser.add_argument(f"--{side}", type=pixels, default=None,
                                help=f"{side} in pixels, a multiple of 8 (default: the model's native size from its "
                                     f"settings file, else its U-Net's sample size x 8; 128 for the bundled model)")
    parser.add_argument("--out", default=None,
                        help="output PNG (with --num N: OUT-0.png ... OUT-(N-1).png); default outputs/COMMAND-SEED.png "
                             "for each picture's seed")
    add_model_arguments(parser)


def bundled_min_steps():
    """The bundled model's fewest steps per sampler, for --sampler's help (weights/README.md has how they were
    measured)."""
    try:
        fewest = model_settings.read_settings(BUNDLED_MODEL).min_steps
    except ValueError:
        fewest = {}
    if not fewest:
        return "the bundled model's are in weights/README.md"
    return "the bundled model needs " + ", ".join(f"{name} {n}" for name, n in fewest.items())


def add_input_size_arguments(parser):
    for side in ("width", "height"):
        parser.add_argument(f"--{side}", type=pixels, default=None,
                            help=f"resize the input picture(s) to this {side} first (default: keep their size; "
                                 f"either option alone keeps the aspect ratio)")


def pixels(text):
    """argparse type of --width/--height: a positive number of pixels."""
    if int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of pixels, got {text}")
    return int(text)


def sampler_name(text):
    """argparse type of --sampler: any spelling ``sampler_names.resolve`` knows, as "name" or "name spacing"."""
    try:
        name, spacing, _ = sampler_names.resolve(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"unknown sampler {text!r}; ")) from None
    return text if sampler_names.WITH_SETTINGS.get(text) else f"{name} {spacing}" if spacing else name


def guidance_scale(text):
    """argparse type of --cfg: a number of at least 0."""
    if float(text) < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0 (1 turns guidance off), got {text}")
    return float(text)


def device_name(text):
    """argparse type of --device, checked before torch is imported: cpu, cuda, cuda:N or mps."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"must be {DEVICES}, got {text!r}")
    return text


def input_size(args, image_path):
    """(width, height) to resize input pictures to, or None to keep them: either option alone keeps the aspect."""
    if args.width is None and args.height is None:
        return None
    from minidiff.images import load_image

    return resized_size(args, *load_image(image_path).size)


def resized_size(args, width, height):
    """(width, height) of a width x height picture after --width/--height (either alone keeps the aspect)."""
    if args.width is None and args.height is None:
        return width, height
    return args.width or round(width * args.height / height), args.height or round(height * args.width / width)


def input_picture(args, path):
    """The picture at ``path`` (RGB PIL), resized as --width/--height ask, which is the size the run draws at.

    Warns when that shrinks it a lot, or when it is not the model's native size; raises a ValueError unless its
    sides are multiples of 8, naming the --width/--height that would make them so.
    """
    from PIL import Image

    from minidiff.images import load_image

    path = Path(path).resolve()
    picture = load_image(path)
    size = resized_size(args, *picture.size)
    if size != picture.size:
        if picture.width >= 2 * size[0] or picture.height >= 2 * size[1]:
            warnings.warn(f"the input picture {path} is {picture.width}x{picture.height} px, much larger than the "
                          f"output: it will be resized to {size[0]}x{size[1]} px first")
        picture = picture.resize(size, resample=Image.Resampling.LANCZOS)
    if size[0] % 8 or size[1] % 8:
        fit = [max(8, round(side / 8) * 8) for side in size]
        raise ValueError(f"the input picture {path} is {size[0]}x{size[1]} px"
                         f"{' after resizing' if args.width or args.height else ''}, but its width and height must "
                         f"be multiples of 8: pass --width {fit[0]} --height {fit[1]} to resize it")
    native = settings(args)
    model_settings.warn_about_size(native, *size, f"pass --width {native.width} --height {native.height} (resizing "
                                                  f"the input picture)")
    return picture


def output_size(args):
    """generate's (width, height): --width/--height, else the model's native size (None: the pipeline's default,
    its U-Net's sample size); warns when it is not the native size, so call it once a run."""
    native = settings(args)
    width, height = args.width or native.width, args.height or native.height
    if width is not None and height is not None:
        model_settings.warn_about_size(native, width, height)
    return width, height


def model_path(args):
    """The --model path, resolved (so that errors name it in full), else the bundled model's folder."""
    return Path(args.model).resolve() if args.model else bundled_model()


def settings(args):
    """The model's ModelSettings: its folder's minidiff_settings.json, else Stable Diffusion's usual settings."""
    return model_settings.read_settings(model_path(args))


def chosen(args):
    """(sampler, steps, cfg): the options given, else the model's settings; --sigmas joins the sampler's name."""
    defaults = settings(args)
    sampler, steps, cfg = (getattr(defaults, k) if getattr(args, k) is None else getattr(args, k)
                           for k in ("sampler", "steps", "cfg"))
    if getattr(args, "sigmas", None):
        if args.karras is not None:
            raise ValueError("--sigmas and --karras/--no-karras both choose the σ spacing; give one of them")
        sampler = f"{sampler_names.resolve(sampler)[0]} {args.sigmas}"
    return sampler, steps, cfg


def load_pipeline(args):
    """The StableDiffusion pipeline for --model (default: the bundled model in weights/), on a device that is
    there. Before loading it, warns about steps below the model's ``min_steps`` and about a prompt outside its
    vocabulary; raises a ValueError when the steps asked for exceed the model's training timesteps."""
    import torch

    from minidiff.pipelines import StableDiffusion

    sampler, steps, _ = chosen(args)  # reads the model's settings file: a wrong one fails before the long load
    with_karras = args.karras and not sampler_names.resolve(sampler)[1]  # --karras: the Karras entry of min_steps
    model_settings.warn_about_steps(settings(args), f"{sampler} karras" if with_karras else sampler, steps)
    model_settings.warn_about_prompt(settings(args), args.prompt)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    sd = StableDiffusion.from_pretrained(model_path(args), dtype=getattr(torch, args.dtype), device=device,
                                         allow_pickle=args.allow_pickle)
    trained = sd.scheduler_config.num_train_timesteps
    if steps > trained:
        raise ValueError(f"--steps {steps} is more than the {trained} timesteps this model was trained with; "
                         f"pass --steps {trained} or fewer")
    return sd


def check_device(device):
    """Raise a one-line error when ``device`` (cpu, cuda, cuda:N, mps) is not on this machine."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device here; use --device cpu")
        index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"there is no {device} here: this machine has {count} CUDA device(s), cuda:0 to "
                             f"cuda:{count - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("no MPS device here; use --device cpu")


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
    """The keyword arguments every pipeline task takes, from the parsed options (and the model's settings)."""
    sampler, steps, cfg = chosen(args)
    return dict(negative_prompt=args.negative, steps=steps, sampler=sampler, karras=args.karras,
                eta=args.eta, guidance_scale=cfg, seed=args.seed, num_images_per_prompt=1,  # run_task: per picture
                clip_skip=args.clip_skip, progress=sys.stderr.isatty())


@contextmanager
def one_line_warnings():
    """Show warnings (e.g. a truncated prompt) as one line each: ``warning: ...``."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *rest, **kw: print(f"warning: {message}", file=sys.stderr)
        yield


def run_task(args, command, task):
    """Load the model, run ``task(pipeline)`` -> PipelineResult once per picture, with args.seed set to that
    picture's seed (SEED + k, see ``outputs``), then save the pictures with their settings; print where they went."""
    from minidiff.commands import outputs

    if args.num < 1:
        raise ValueError(f"--num must be at least 1, got {args.num}")
    if args.out is not None and Path(args.out).suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {args.out}")
    seeds = outputs.picture_seeds(args.seed, args.num)
    with one_line_warnings():
        pipeline, results = load_pipeline(args), []
        for seed in seeds:
            args.seed = seed  # what sampling_options hands the task
            results.append(task(pipeline))
        fields = outputs.run_fields(args, sampling_options(args), pipeline.scheduler_config, model_path(args))
    outputs.save_results(args, command, results, fields)
    return 0
