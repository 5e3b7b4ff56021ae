"""``python -m minidiff schedule``: show the timesteps and noise levels a sampler will use.

    python -m minidiff schedule --sampler euler --steps 25 --karras --plot sigmas.png
    python -m minidiff schedule --list

Prints one row per network call: the timestep t handed to the U-Net, the σ-space noise level σ of the latent
before the call and ᾱ = 1 / (1 + σ²), its share of signal power. The plot is written before the table, so a
reader that stops early (``| head``) still gets it, and such a reader ends the table quietly. ``--list`` prints
the samplers instead: minidiff's name, A1111's and ComfyUI's, the diffusers class, the order of accuracy, whether
it draws fresh noise, and its network evaluations per step.
"""

import argparse
import os
import sys

HELP = "print a sampler's timesteps and noise levels as a table, and optionally plot them"


def add_arguments(parser):
    parser.add_argument("--list", action="store_true", help="list the samplers and the names other tools give them")
    parser.add_argument("--sampler", default="euler",
                        help="a sampler's name or its A1111/ComfyUI name (see --list; default: euler)")
    parser.add_argument("--steps", type=int, default=25, help="number of sampling steps (default: 25)")
    parser.add_argument("--karras", action=argparse.BooleanOptionalAction, default=None,
                        help="Karras et al.'s noise levels on or off (euler, heun, lms, dpmpp_2m; default: the "
                             "config's use_karras_sigmas, as in diffusers)")
    parser.add_argument("--sigmas", choices=("karras", "exponential", "beta"), default=None,
                        help="the σ spacing (default: the sampler name's, else the config's use_*_sigmas)")
    parser.add_argument("--strength", type=float, default=1.0, help="img2img strength in (0, 1] (default: 1)")
    parser.add_argument(
        "--config", help="a diffusers scheduler_config.json, or its folder (default: Stable Diffusion's settings)"
    )
    parser.add_argument("--plot", metavar="FILE.png", help="also plot σ and ᾱ against the call index")


def run(args):
    from minidiff.samplers import SchedulerConfig, make_sampler

    if args.list:
        return print_list()
    config = SchedulerConfig.from_json(args.config) if args.config else SchedulerConfig()
    sampler = make_sampler(args.sampler, config, args.steps, karras=args.karras, strength=args.strength,
                           sigmas=args.sigmas)
    sigmas = [float(sampler.sigma_at(i)) for i in range(len(sampler.timesteps))]
    alpha_bars = [1 / (1 + s**2) for s in sigmas]
    if args.plot:
        write_plot(args.plot, args.sampler, sigmas, alpha_bars)

    try:
        print(
            f"{args.sampler}: {args.steps} steps, {len(sampler.timesteps)} network calls, "
            f"{sampler.config.timestep_spacing} spacing, σ spacing {sampler.spacing or 'as interpolated'}, "
            f"init_noise_sigma={sampler.init_noise_sigma:.6g}"
        )
        print(f"{'call':>5} {'timestep':>10} {'sigma':>12} {'alpha_bar':>12}")
        for i, (t, sigma, alpha_bar) in enumerate(zip(sampler.timesteps.tolist(), sigmas, alpha_bars)):
            print(f"{i:>5} {t:>10.4g} {sigma:>12.6g} {alpha_bar:>12.6g}")
        if args.plot:
            print(f"plot written to {args.plot}")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader closed the pipe (`| head`): the rest of the table goes nowhere, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit must not fail too
    return 0


def print_list():
    """One row per sampler: our name, A1111's, ComfyUI's, diffusers' class, order, stochastic, calls per step."""
    from minidiff.sampler_names import NAMES, SPACING_SUFFIXES, WITH_SETTINGS
    from minidiff.samplers import SAMPLERS

    rows = [("minidiff", "A1111", "ComfyUI", "diffusers class", "order", "stochastic", "NFE/step", "σ spacings")]
    for name, sampler in SAMPLERS.items():
        a1111, comfy = NAMES[name]
        comfy = [*comfy, *(spelling for spelling, (target, _) in WITH_SETTINGS.items() if target == name)]
        rows.append((name, a1111 or "-", ", ".join(comfy) or "-", sampler.diffusers_class, str(sampler.accuracy),
                     "yes" if sampler.stochastic else "no", str(sampler.order), ", ".join(sampler.spacings) or "-"))
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\nA σ spacing joins a name: \"DPM++ 2M Karras\", \"euler beta\" ({', '.join(SPACING_SUFFIXES)}); "
          f"names compare without case, spaces or underscores. NFE/step: network evaluations per step (heun's "
          f"last step takes one).")
    return 0


def write_plot(path, sampler_name, sigmas, alpha_bars):
    """σ (log scale) and ᾱ against the network call index, side by side, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_sigma, ax_alpha) = plt.subplots(1, 2, figsize=(10, 4))
    ax_sigma.semilogy(sigmas, marker=".")
    ax_sigma.set(xlabel="network call", ylabel="σ (log scale)", title=f"{sampler_name}: noise level σ")
    ax_alpha.plot(alpha_bars, marker=".")
    ax_alpha.set(xlabel="network call", ylabel="ᾱ", title="signal fraction ᾱ = 1 / (1 + σ²)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
