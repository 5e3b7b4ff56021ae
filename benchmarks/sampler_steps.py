"""How few steps each sampler needs on the bundled model: prompt adherence against the number of steps.

    python benchmarks/sampler_steps.py --device cuda --out benchmarks/results/sampler-steps

For every sampler (and its Karras variant where it has one) and every step count of STEPS, the bundled model
draws the same seeded prompts as ``python -m minidiff evaluate`` (half single objects, half pairs in a relation),
at its guidance scale, and the shapes detector scores each picture. A run *holds* when both its "all right"
rates (single objects and pairs) come within TOLERANCE of what the same sampler reaches at the largest step
count, where every sampler has converged; a sampler's fewest steps is the smallest count from which every
larger count holds. Writes OUT.json (every rate), OUT.txt (the table and the fewest steps) and OUT.png (the
curves).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from minidiff.pipelines import StableDiffusion
from minidiff.samplers import KARRAS_SAMPLERS, SAMPLER_NAMES
from minidiff.tools.evaluate import attribute_rates, make_prompts

STEPS = (5, 8, 10, 12, 15, 20, 25, 30, 40, 50)
TOLERANCE = 0.10  # absolute difference in an "all right" rate, about two standard errors at 120 prompts
ROOT = Path(__file__).resolve().parents[1]


def runs(names=SAMPLER_NAMES, karras_for=KARRAS_SAMPLERS):
    """(label, sampler, karras) for every sampler of NAMES, and its Karras variant for those of KARRAS_FOR."""
    for name in names:
        yield name, name, False
        if name in KARRAS_SAMPLERS and name in karras_for:
            yield f"{name} karras", name, True


def fewest_steps(curve, tolerance=TOLERANCE):
    """curve: {steps: (single, pair)} -> the smallest step count from which every larger one holds."""
    counts = sorted(curve)
    reference = curve[counts[-1]]
    holds = [all(abs(a - b) <= tolerance for a, b in zip(curve[n], reference)) for n in counts]
    fewest = counts[-1]
    for n, ok in zip(reversed(counts), reversed(holds)):
        if not ok:
            break
        fewest = n
    return fewest


def sampler_benchmark_parser(description):
    """The options both sampler benchmarks take: the model, device, prompts, guidance and samplers."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=str(ROOT / "weights"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=120, help="prompts: half single objects, half pairs")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLER_NAMES), choices=SAMPLER_NAMES,
                        help="the samplers to measure")
    return parser


def main():
    parser = sampler_benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS), help="the step counts to try")
    parser.add_argument("--karras-for", nargs="*", default=list(KARRAS_SAMPLERS), choices=KARRAS_SAMPLERS,
                        help="the samplers also measured with Karras σ's (default: all that have them)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampler-steps"))
    args = parser.parse_args()

    sd = StableDiffusion.from_pretrained(args.model, device=args.device)
    prompts = make_prompts(args.samples)
    texts = [p for _, p in prompts]
    curves, started = {}, time.time()
    for label, sampler, karras in runs(args.samplers, args.karras_for):
        curve = {}
        for steps in args.steps:
            generators = [torch.Generator().manual_seed(i) for i in range(len(texts))]  # sample i: seed i
            images = sd.text_to_image(texts, steps=steps, sampler=sampler, karras=karras, guidance_scale=args.guidance,
                                      generator=generators, progress=False).images
            rates = attribute_rates(prompts, images)
            curve[steps] = (rates["single"]["all"], rates["pair"]["all"])
            print(f"{label:<16} {steps:>3} steps: single {curve[steps][0]:.0%}, pair {curve[steps][1]:.0%} "
                  f"({time.time() - started:.0f} s)", flush=True)
        curves[label] = curve
        lines = write(curves, args)  # after every sampler, so that a run cut short keeps what it measured
    print("\n".join(lines))
    plot(curves, args.steps, Path(args.out).with_suffix(".png"))


def write(curves, args):
    """Write OUT.json and OUT.txt for the samplers measured so far; returns the table's lines."""
    fewest = {label: fewest_steps(curve) for label, curve in curves.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = dict(command=" ".join(["python", "benchmarks/sampler_steps.py", *sys.argv[1:]]), steps=args.steps,
                  samples=args.samples, guidance=args.guidance, tolerance=TOLERANCE, fewest_steps=fewest,
                  rates={label: {str(n): list(r) for n, r in curve.items()} for label, curve in curves.items()},
                  device=torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
                  torch=torch.__version__)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    header = f"{'sampler':<16}" + "".join(f"{n:>11}" for n in args.steps) + "   fewest"
    lines = [f"# {record['command']}  ({record['device']}, torch {record['torch']})",
             "# all-right rates, single objects / pairs", header]
    for label, curve in curves.items():
        cells = "".join(f"{round(100 * curve[n][0]):>6}/{round(100 * curve[n][1]):<4}" for n in args.steps)
        lines.append(f"{label:<16}{cells}   {fewest[label]}")
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return lines


def plot(curves, steps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for label, curve in curves.items():
        style = "--" if label.endswith("karras") else "-"
        for ax, k in zip(axes, (0, 1)):
            ax.plot(list(curve), [r[k] for r in curve.values()], style, marker=".", label=label)
    for ax, title in zip(axes, ("single objects", "pairs in a relation")):
        ax.set(title=f"{title}: all right", xlabel="steps", xscale="log", ylim=(0, 1))
        ax.set_xticks(steps, [str(n) for n in steps])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of pictures")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("The bundled model: prompt adherence against sampler steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
