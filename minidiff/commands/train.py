"""``python -m minidiff train STAGE``: train the bundled shapes model from scratch, one stage at a time.

    python -m minidiff train vae --device cuda            # 1. autoencoder
    python -m minidiff train clip --device cuda           # 2. text encoder (with an image tower)
    python -m minidiff train unet --device cuda           # 3. denoiser (needs 1 and 2)
    python -m minidiff train controlnet --device cuda     # 4. edge ControlNet (needs 1, 2 and 3)
    python -m minidiff train export --to weights          # 5. write the diffusers folder
    python -m minidiff train import --from weights        # or: continue training the shipped weights

Checkpoints, loss plots and logs go to --out (default runs/bundled); a stopped stage resumes where it was.
A stage that builds on earlier ones (unet on vae and clip, controlnet on those and unet) refuses to start when
their checkpoints are not in --out, and names the commands that make them: train those stages, or `train import`
the bundled model's. It never imports by itself: whether a run starts from scratch or from the shipped weights
is for the user to say.
The recipe (sizes, steps, learning rates) lives in minidiff/train/bundled.py.
"""

HELP = "train the bundled shapes model: vae, clip, unet, controlnet, then export (import: continue from a folder)"


def add_arguments(parser):
    parser.add_argument("stage", choices=("vae", "clip", "unet", "controlnet", "export", "import"), help="what to do")
    parser.add_argument("--out", default="runs/bundled", help="folder for checkpoints, logs and loss plots")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--steps", type=int, help="total steps of the stage (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, help="images per step (default: the recipe's)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    parser.add_argument("--cooldown", type=int, metavar="STEPS",
                        help="let the learning rate fall linearly to 0 over the last STEPS steps of --steps")
    parser.add_argument("--decoder-only", action="store_true",
                        help="vae: fine-tune the decoder alone; the latent space, and so the U-Net, stay valid")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, the scenes and the noise")
    parser.add_argument("--minutes", type=float, help="stop (with a checkpoint) after this many minutes")
    parser.add_argument("--to", default="weights", help="export: the model folder to write (must not exist)")
    parser.add_argument("--from", dest="source", default=None,
                        help="import: an exported model folder whose weights the stages continue from "
                             "(default: the bundled model)")


def run(args):
    import torch

    from minidiff.commands.pipeline_options import bundled_model
    from minidiff.train import bundled

    if args.stage == "export":
        folder = bundled.export_checkpoints(args.out, args.to)
        print(f"wrote {folder}")
        return 0
    if args.stage == "import":
        steps = bundled.import_folder(args.source or bundled_model(), args.out)
        done = ", ".join(f"{name} at step {step}" for name, step in steps.items())
        print(f"wrote checkpoints to {args.out}: {done}; each stage now resumes from there")
        return 0
    if args.cooldown is not None and args.steps is None:
        raise ValueError("--cooldown counts back from the last step: give --steps as well (the step to end at).")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                   ("cooldown_steps", args.cooldown)) if v is not None}
    if args.decoder_only:
        if args.stage != "vae":
            raise ValueError("--decoder-only applies to the vae stage only.")
        overrides["train_encoder"] = False
    time_limit = args.minutes * 60 if args.minutes is not None else None
    bundled.run_stage(args.stage, args.out, device=device, seed=args.seed, time_limit=time_limit, **overrides)
    print(f"{args.stage}: checkpoint, log and loss plot in {args.out}")
    return 0
