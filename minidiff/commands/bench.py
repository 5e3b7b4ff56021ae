"""``python -m minidiff bench``: time minidiff against diffusers on the Stable Diffusion 1.5 architecture.

    python -m minidiff bench --device cuda --dtype float16 bfloat16 --compile diffusers minidiff --out r.json
    python -m minidiff bench --device cpu                       # U-Net at 256 and 512 px, text encoder, fp32
    python -m minidiff bench --device cpu --tiny                # tiny models: checks the benchmark in seconds

Both libraries get the same random weights, so every row also reports the output error against a float32
reference. See minidiff/tools/bench/ for the variants and how they are timed, and lessons/12-performance.md.
"""

HELP = "time minidiff's networks and a whole text-to-image run against diffusers (same weights, same run)"


def add_arguments(parser):
    from minidiff.tools.bench.run import WORKLOADS

    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--dtype", nargs="+", choices=("float32", "float16", "bfloat16"), default=None,
                        help="one or more dtypes (default: float16 on cuda, float32 on cpu)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=None,
                        help="what to time (default: all on cuda; unet and text on cpu)")
    parser.add_argument("--unet-cases", nargs="+", default=None, metavar="BATCHxPIXELS",
                        help="U-Net steps to time, e.g. 2x512 (default: 1x512 2x512 8x512 2x768 on cuda, "
                             "1x256 1x512 on cpu)")
    parser.add_argument("--steps", type=int, default=50, help="sampler steps of the whole text-to-image run")
    parser.add_argument("--compile", nargs="+", choices=("diffusers", "minidiff"), default=(),
                        help="also time torch.compile for these libraries at the second U-Net case and in the "
                             "whole run, on the first dtype (a minute or more of compiling each)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default: 20 on cuda, 3 on cpu)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and 64 px: try the benchmark itself")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")


def parse_case(text):
    try:
        batch, pixels = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--unet-cases takes BATCHxPIXELS such as 2x512, got {text!r}") from None
    if batch < 1 or pixels < 8 or pixels % 8:
        raise ValueError(f"--unet-cases {text}: the batch must be >= 1 and the pixels a multiple of 8")
    return batch, pixels


def run(args):
    import torch

    from minidiff.tools.bench.run import BenchConfig, run_benchmark

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA device; use --device cpu")
    if args.tiny:
        cases, sizes = ("1x64", "2x64"), 64
    else:
        cases, sizes = ("1x512", "2x512", "8x512", "2x768") if cuda else ("1x256", "1x512"), 512
    cases = tuple(parse_case(c) for c in (args.unet_cases or cases))
    config = BenchConfig(
        device=args.device,
        dtypes=tuple(args.dtype or (("float16",) if cuda else ("float32",))),
        workloads=tuple(args.workloads or (("unet", "vae", "text", "full") if cuda or args.tiny else ("unet", "text"))),
        unet_cases=cases,
        vae_size=sizes,
        full_size=sizes,
        full_steps=args.steps,
        compile=tuple(args.compile),
        compile_case=cases[1] if len(cases) > 1 else cases[0],
        repeats=args.repeats or (20 if cuda else 3),
        max_seconds=10.0 if cuda else 60.0,
        tiny=args.tiny,
    )
    run_benchmark(config, args.out)
    return 0
