"""Which samplers are good in few steps: the bundled model's prompt adherence against network evaluations.

    python benchmarks/sampler_nfe.py --device cuda --out benchmarks/results/sampler-nfe

For every sampler and every budget of NFE network evaluations (4, 8, 16, 32), the bundled model draws the seeded
prompts of ``python -m minidiff evaluate`` with as many steps as fit in the budget (Heun's and DPM2's steps cost
two evaluations, so they get fewer), and the shapes detector scores each picture. Writes OUT.json (every rate and
the steps taken), OUT.txt (the table), OUT.png (one curve per sampler: the mean of the single-object and pair
"all right" rates) and OUT-pictures.png (the first prompt's picture for every sampler and budget).
"""

import json
import sys
import time
from pathlib import Path

import torch

from minidiff.images import tensor_to_pil
from minidiff.pipelines import StableDiffusion
from minidiff.samplers import make_sampler
from minidiff.tools.evaluate import attribute_rates, make_prompts
from sampler_steps import sampler_benchmark_parser  # the sibling script

BUDGETS = (4, 8, 16, 32)
ROOT = Path(__file__).resolve().parents[1]


def steps_within(sampler, config, nfe):
    """The most steps whose run calls the network at most ``nfe`` times (None if even one step costs more)."""
    best = None
    for steps in range(1, nfe + 1):
        if len(make_sampler(sampler, config, steps).timesteps) <= nfe:
            best = steps
    return best


def main():
    parser = sampler_benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS), help="the NFE budgets to try")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampler-nfe"))
    args = parser.parse_args()

    sd = StableDiffusion.from_pretrained(args.model, device=args.device)
    prompts = make_prompts(args.samples)
    texts = [p for _, p in prompts]
    record, pictures, started = {}, {}, time.time()
    for name in args.samplers:
        record[name] = {}
        for nfe in args.budgets:
            steps = steps_within(name, sd.scheduler_config, nfe)
            if steps is None:
                continue
            generators = [torch.Generator().manual_seed(i) for i in range(len(texts))]  # sample i: seed i
            images = sd.text_to_image(texts, steps=steps, sampler=name, guidance_scale=args.guidance,
                                      generator=generators, progress=False).images
            rates = attribute_rates(prompts, images)
            record[name][nfe] = dict(steps=steps, single=rates["single"]["all"], pair=rates["pair"]["all"])
            pictures[name, nfe] = tensor_to_pil(images[:1])[0]
            print(f"{name:<14} NFE {nfe:>3} ({steps} steps): single {rates['single']['all']:.0%}, "
                  f"pair {rates['pair']['all']:.0%} ({time.time() - started:.0f} s)", flush=True)
        write(record, args)
    plot(record, args.budgets, Path(args.out).with_suffix(".png"))
    picture_grid(pictures, args.samplers, args.budgets, texts[0], Path(f"{args.out}-pictures.png"))


def write(record, args):
    """OUT.json and OUT.txt for the samplers measured so far (a run cut short keeps them)."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    command = " ".join(["python", "benchmarks/sampler_nfe.py", *sys.argv[1:]])
    out.with_suffix(".json").write_text(json.dumps(dict(command=command, device=device, torch=torch.__version__,
                                                        samples=args.samples, guidance=args.guidance,
                                                        rates=record), indent=1) + "\n")
    lines = [f"# {command}  ({device}, torch {torch.__version__}, {args.samples} prompts, guidance {args.guidance})",
             "# all-right rates single / pair (steps taken) at each budget of network evaluations",
             f"{'sampler':<14}" + "".join(f"{'NFE ' + str(n):>16}" for n in args.budgets)]
    for name, runs in record.items():
        cells = [f"{round(100 * r['single']):>3}/{round(100 * r['pair']):<3} ({r['steps']:>2})" if r else "-"
                 for r in (runs.get(n) for n in args.budgets)]
        lines.append(f"{name:<14}" + "".join(f"{c:>16}" for c in cells))
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(record, budgets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors, markers = plt.get_cmap("tab20").colors, "os^vD<>ph*"
    for k, (name, runs) in enumerate(record.items()):
        nfes = sorted(runs)
        ax.plot(nfes, [(runs[n]["single"] + runs[n]["pair"]) / 2 for n in nfes], marker=markers[k % len(markers)],
                color=colors[k % len(colors)], label=name)
    ax.set(xscale="log", xlabel="network evaluations (NFE)", ylabel="pictures all right (mean of singles and pairs)",
           ylim=(0, 1), title="The bundled model: prompt adherence against network evaluations")
    ax.set_xticks(budgets, [str(n) for n in budgets])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def picture_grid(pictures, samplers, budgets, prompt, path):
    """One row per sampler, one column per budget: the first prompt's picture (seed 0)."""
    from PIL import Image, ImageDraw

    side, label, top = 128, 110, 30
    grid = Image.new("RGB", (label + side * len(budgets), top + side * len(samplers)), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((4, 2), f'"{prompt}", seed 0', fill="black")
    for col, nfe in enumerate(budgets):
        draw.text((label + col * side + side // 2 - 16, 16), f"NFE {nfe}", fill="black")
    for row, name in enumerate(samplers):
        draw.text((4, top + row * side + side // 2), name, fill="black")
        for col, nfe in enumerate(budgets):
            if (name, nfe) in pictures:
                grid.paste(pictures[name, nfe].resize((side, side)), (label + col * side, top + row * side))
    grid.save(path)


def replot(json_path):
    """Draw OUT.png again from a run's OUT.json."""
    record = json.loads(Path(json_path).read_text())
    rates = {name: {int(n): r for n, r in runs.items()} for name, runs in record["rates"].items()}
    budgets = sorted({n for runs in rates.values() for n in runs})
    plot(rates, budgets, Path(json_path).with_suffix(".png"))


if __name__ == "__main__":
    main()
