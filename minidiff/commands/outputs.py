"""What the image commands write: each picture as a PNG that carries the settings it was made with, and on request
a contact sheet of the run.

Seeds: picture k of a run of N gets seed SEED + k and is made by a pipeline call of its own, so
``--seed SEED+k --num 1`` makes it again, bit for bit. A batch with one generator per picture would not: a batch's
kernels round differently from a single picture's, and inpainting, as in diffusers, encodes the input picture with
the first generator of a list. ``--seed -1``, like no --seed, picks a new random seed.

Settings: every PNG holds a ``parameters`` text chunk in the format of the AUTOMATIC1111 web UI (A1111), whose
"PNG Info" tab reads it back; ``python -m minidiff info PICTURE.png`` prints it:

    a red circle
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, CFG scale: 5, Seed: 7, Size: 128x128, Model hash: 1a2b3c4d5e, Model: weights

The negative prompt's line is there only when one was given. A value holding a comma, a colon or a line break is
written as a JSON string, as A1111 does. The model hash is A1111's short hash, the first 10 hex digits of the sha256
of the checkpoint file; for a diffusers folder, of its U-Net's weights file (of its shards' bytes one after the
other, in the order of their names, when the weights are split). It is computed on each run, never stored.
"""

import hashlib
import json
import math
import random
from pathlib import Path

from minidiff.sampler_names import a1111_name

PARAMETERS = "parameters"  # the PNG text chunk's key, as A1111 names it
RANDOM_SEED = -1  # --seed -1: a new random seed, as in A1111
SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes seeds below this
CAPTION_HEIGHT = 14  # pixels below each picture of a contact sheet, for its seed


def picture_seeds(seed, num):
    """The seeds of a run's ``num`` pictures: seed, seed + 1, ..., seed + num - 1; None or -1 draws a new seed."""
    if seed is None or seed == RANDOM_SEED:
        seed = random.SystemRandom().randrange(2**32)
    if seed < 0:
        raise ValueError(f"--seed must be a whole number from 0, or -1 for a new random seed; got {seed}")
    if seed + num > SEED_LIMIT:
        raise ValueError(f"--seed {seed} with --num {num} passes the largest seed torch takes (2**64 - 1); give a "
                         f"seed of at most {SEED_LIMIT - num}")
    return [seed + k for k in range(num)]


def output_paths(out, command, seeds):
    """Where the pictures go: outputs/COMMAND-SEED.png for each seed by default; with --out OUT, OUT itself for one
    picture and OUT-0.png ... OUT-(N-1).png for N."""
    if out is None:
        return [Path(f"outputs/{command}-{seed}.png") for seed in seeds]
    out = Path(out)
    return [out] if len(seeds) == 1 else [out.with_name(f"{out.stem}-{k}.png") for k in range(len(seeds))]


def grid_path(out, command, seeds):
    """Where the contact sheet goes: beside the pictures, OUT-grid.png (by default outputs/COMMAND-SEED-grid.png,
    SEED the first picture's)."""
    base = Path(out) if out is not None else Path(f"outputs/{command}-{seeds[0]}.png")
    return base.with_name(f"{base.stem}-grid.png")


def model_hash(model, allow_pickle):
    """A1111's short hash of ``model`` (a checkpoint file or a diffusers folder): see the module docstring."""
    from minidiff.loading.components import INDEX_SUFFIX, read_json, weights_file

    model = Path(model)
    files = [model]
    if model.is_dir():
        files = [weights_file(model / "unet", "diffusion_pytorch_model", None, allow_pickle)]
        if files[0].name.endswith(INDEX_SUFFIX):
            files = [files[0].parent / name for name in sorted(set(read_json(files[0])["weight_map"].values()))]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:10]


def model_name(model):
    """A1111's model name: the checkpoint file's name without its suffix, or the diffusers folder's name."""
    model = Path(model).resolve()
    return model.name if model.is_dir() else model.stem


def run_fields(args, options, scheduler_config, model):
    """A1111's settings fields shared by a run's pictures, in A1111's order, from the parsed command line ``args``,
    the pipeline keywords ``options`` (``sampling_options``) and the model. "Seed" and "Size" hold None here and
    are filled in for each picture."""
    from minidiff.samplers import make_sampler

    run = make_sampler(options["sampler"], scheduler_config, options["steps"], karras=options["karras"],
                       eta=options["eta"])
    sampler = run.name
    fields = {"Steps": options["steps"], "Sampler": a1111_name(sampler)}
    if run.spacing:  # the σ's the run's sampler took (--karras/--sigmas, else the model's setting)
        fields["Schedule type"] = run.spacing.capitalize()
    fields.update({"CFG scale": options["guidance_scale"], "Seed": None, "Size": None,
                   "Model hash": model_hash(model, args.allow_pickle), "Model": model_name(model)})
    if getattr(args, "strength", None) is not None:  # img2img, inpaint, outpaint
        fields["Denoising strength"] = args.strength
    if options["clip_skip"]:
        fields["Clip skip"] = options["clip_skip"] + 1  # A1111 counts the last layer as 1, minidiff as 0
    if sampler == "ddim" and options["eta"]:
        fields["Eta DDIM"] = options["eta"]
    if getattr(args, "control_scale", None) is not None:  # control: as A1111's ControlNet extension writes it
        canny = f"Threshold A: {args.canny_low:g}, Threshold B: {args.canny_high:g}, " if args.image else ""
        fields["ControlNet 0"] = (f"Module: {'canny' if args.image else 'none'}, Weight: {args.control_scale:g}, "
                                  f"{canny}Guidance Start: {args.control_start:g}, Guidance End: {args.control_end:g}")
    return fields


def quote(value):
    """A field's value as A1111 writes it: numbers as %g, text with a comma, colon or line break as a JSON string."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def parameters_text(prompt, negative, fields):
    """A1111's parameters text: the prompt; "Negative prompt: ..." when there is one; "Key: value, ..." last."""
    negative_line = [f"Negative prompt: {negative}"] if negative else []
    return "\n".join([prompt, *negative_line, ", ".join(f"{key}: {quote(value)}" for key, value in fields.items())])


def contact_sheet(pictures, captions):
    """The pictures (all of one size) side by side in a near-square grid, ceil(√N) columns, each captioned below."""
    from PIL import Image, ImageDraw, ImageFont

    columns = math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / columns)
    width, height = pictures[0].size
    cell = height + CAPTION_HEIGHT
    sheet = Image.new("RGB", (columns * width, rows * cell), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for k, (picture, caption) in enumerate(zip(pictures, captions)):
        x, y = k % columns * width, k // columns * cell
        sheet.paste(picture, (x, y))
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)  # its extent from the origin
        origin = (x + (width - (right - left)) / 2 - left, y + height + (CAPTION_HEIGHT - (bottom - top)) / 2 - top)
        draw.text(origin, caption, fill="black", font=font)  # centred below the picture
    return sheet


def save_results(args, command, results, fields):
    """Write each picture (``results``: one PipelineResult per picture) with its parameters text, printing
    ``wrote PATH (seed S)``; with --grid, also the contact sheet. ``fields``: ``run_fields``."""
    from PIL.PngImagePlugin import PngInfo

    from minidiff.images import save_png

    pictures, seeds = [result.to_pil()[0] for result in results], [result.seed for result in results]
    for picture, seed, path in zip(pictures, seeds, output_paths(args.out, command, seeds)):
        info = PngInfo()
        size = "{}x{}".format(*picture.size)
        info.add_text(PARAMETERS, parameters_text(args.prompt, args.negative, {**fields, "Seed": seed, "Size": size}))
        save_png(picture, path, pnginfo=info)
        print(f"wrote {path} (seed {seed})")
    if args.grid:
        sheet = contact_sheet(pictures, [f"seed {seed}" for seed in seeds])
        path = save_png(sheet, grid_path(args.out, command, seeds))
        print(f"wrote {path} (contact sheet of {len(pictures)} pictures)")


def read_parameters(path):
    """The parameters text of a PNG, or a one-line error when there is no such file, it is no PNG, or it has none."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}; check the path")
    try:
        with Image.open(path) as image:
            kind, text = image.format, image.text.get(PARAMETERS) if image.format == "PNG" else None
    except OSError as exc:  # PIL's UnidentifiedImageError too
        raise ValueError(f"could not read {path} as a picture ({exc}); give a PNG an image command wrote") from None
    if kind != "PNG":
        raise ValueError(f"{path} is a {kind} picture, not a PNG; only PNGs carry minidiff's settings")
    if text is None:
        raise ValueError(f"{path} holds no {PARAMETERS!r} text, which the image commands write into each picture "
                         f"(not into a --grid sheet): this PNG comes from elsewhere, or lost its metadata")
    return text
