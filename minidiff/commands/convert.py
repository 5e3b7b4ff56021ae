"""``python -m minidiff convert SRC DST``: a model from one layout to the other, through minidiff's networks.

    python -m minidiff convert v1-5-pruned-emaonly.safetensors sd15/                 # single file -> diffusers folder
    python -m minidiff convert sd15/ sd15.safetensors                                # diffusers folder -> single file
    python -m minidiff convert sd15/ sd15-fp16/ --dtype float16                      # halve the size
    python -m minidiff convert old.ckpt old/ --allow-pickle                          # pickle in, safetensors out
    python -m minidiff convert v2-1_768-ema-pruned.safetensors sd21/ --prediction-type v_prediction
    python -m minidiff convert sd15-canny/ sd15.safetensors --without-controlnet     # a single file holds none

A single file holds no tokenizer either: it is read back with CLIP's, so a model with another vocabulary (the
bundled one's) stays a folder, and convert refuses before writing anything. A folder's minidiff_settings.json (its
recommended sampler, steps, guidance and size) goes with it into a new folder; a single file has no room for it.

Every tensor passes the same strict checks as when a pipeline loads it, and minidiff writes only safetensors,
so converting a trusted pickle once lets every later run avoid pickle.
"""

HELP = "convert a model between a diffusers folder and a single .safetensors file (optionally to float16)"

DTYPES = ("float32", "float16", "bfloat16")


def add_arguments(parser):
    parser.add_argument("src", help="a diffusers model folder, or a single checkpoint file (.safetensors; .ckpt etc.)")
    parser.add_argument("dst", help="the new folder, or a .safetensors file; must not exist yet")
    parser.add_argument(
        "--to", choices=("diffusers", "single"), default=None,
        help="output layout (default: 'single' when DST ends in .safetensors, else 'diffusers')",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of the written weights")
    parser.add_argument(
        "--allow-pickle", action="store_true",
        help="read a pickle checkpoint (.ckpt/.pt/.pth/.bin): only for files you trust; read weights-only",
    )
    parser.add_argument(
        "--prediction-type", choices=("epsilon", "v_prediction"), default=None,
        help="what the U-Net predicts; required for SD 2.x single files (768 px models: v_prediction)",
    )
    parser.add_argument("--variant", default=None, help="read *.VARIANT.safetensors weights of a folder, e.g. fp16")
    parser.add_argument("--without-controlnet", action="store_true",
                        help="leave the model's ControlNet out of DST (a single file has no room for one)")


def run(args):
    from pathlib import Path

    import torch

    from minidiff.loading import load_components, save_components, save_single_file

    to = args.to or ("single" if args.dst.endswith(".safetensors") else "diffusers")
    dst = Path(args.dst)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists; choose a new name (convert never overwrites).")
    components = load_components(
        args.src, dtype=getattr(torch, args.dtype), allow_pickle=args.allow_pickle, variant=args.variant,
        prediction_type=args.prediction_type,
    )
    if args.without_controlnet:
        components.controlnet = None
    if to == "single":
        save_single_file(components, dst)
    else:
        save_components(components, dst)
    print(f"wrote {dst} ({'single file' if to == 'single' else 'diffusers folder'}, {args.dtype})")
    prediction_type = components.scheduler_config.prediction_type
    if to == "single" and prediction_type != "epsilon":
        print(f"note: a single file cannot record that the model predicts {prediction_type}; "
              f"load it with --prediction-type {prediction_type}")
    if to == "single" and components.settings is not None:
        print(f"note: a single file has no room for {args.src}'s minidiff_settings.json; pass its values as "
              f"--sampler, --steps, --cfg, --width and --height when you use {dst}")
    return 0
