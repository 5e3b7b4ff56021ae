"""``python -m minidiff evaluate``: how often the model draws the colours, shapes and relations it is asked for.

    python -m minidiff evaluate                          # the bundled model, 200 samples, with its settings
    python -m minidiff evaluate --samples 400 --sampler euler --steps 30 --cfg 7.5 --json results.json
    python -m minidiff evaluate --control 50             # also edge F1 of the ControlNet vs no control
    python -m minidiff evaluate --reconstruct 200        # also VAE round trips of rendered scenes, scored

Without --sampler, --steps or --cfg, the model's minidiff_settings.json says, as for generate (the bundled model's:
euler_a, 20 steps, guidance 5); a model without one gets euler, 25 steps, guidance 7.5.
Prompts, detector and scores: see minidiff/tools/evaluate.py.
"""

from minidiff.commands.pipeline_options import SAMPLERS

HELP = "score generated pictures against their prompts (colour, shape, relation, CLIP score, edge F1)"


def add_arguments(parser):
    parser.add_argument("--model", default=None, help="a diffusers model folder (default: the bundled weights/)")
    parser.add_argument("--samples", type=int, default=200,
                        help="how many prompts, half single objects, half pairs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompts and of sample 0 (sample i: seed + i)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=None,
                        help="the sampler (default: the model's settings file, else euler)")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampler steps (default: the model's settings file, else 25)")
    parser.add_argument("--cfg", type=float, default=None,
                        help="classifier-free guidance scale (default: the model's settings file, else 7.5)")
    parser.add_argument("--control", type=int, default=0, help="also score the ControlNet on this many scenes")
    parser.add_argument("--reconstruct", type=int, default=0, metavar="N",
                        help="also score N rendered scenes after a VAE round trip: what the decoder allows")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--json", default=None,
                        help="write the full report here, every prompt with what was detected and whether it passed "
                             "(default: outputs/evaluate.json)")
    parser.add_argument("--grid", default=None,
                        help="also save the first 32 pictures as one PNG here, each captioned with its prompt and "
                             "pass or FAIL")


def run(args):
    import json
    from pathlib import Path

    import torch

    from minidiff.commands.pipeline_options import bundled_model, chosen
    from minidiff.tools.evaluate import captioned_grid, evaluate, format_table

    if args.samples < 1:
        raise ValueError(f"--samples must be at least 1, got {args.samples}")
    model = args.model or str(bundled_model())
    sampler, steps, cfg = chosen(args)  # the options given, else the model's settings file
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.reconstruct < 0 or args.control < 0:
        raise ValueError("--reconstruct and --control count samples: 0 or more")
    report, images = evaluate(model, args.samples, args.seed, sampler, steps, cfg, args.control, device,
                              reconstruction_samples=args.reconstruct)
    print(format_table(report))
    path = Path(args.json or "outputs/evaluate.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    if args.grid:
        captioned_grid(images[:32], report["prompts"][:32]).save(args.grid)
        print(f"wrote {args.grid}")
    return 0
