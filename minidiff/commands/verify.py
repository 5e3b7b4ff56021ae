"""``python -m minidiff verify PATH``: check that minidiff computes what diffusers and transformers compute with
the model at PATH (a diffusers folder or a single checkpoint file). Rows that cannot apply to the model (Heun and
LMS on a zero-terminal-SNR checkpoint) are listed as skipped, with the reason; the command exits 0 when every
other row passes, and 1 naming the rows that failed.

    python -m minidiff verify weights/
    python -m minidiff verify v1-5-pruned-emaonly.safetensors --device cuda --dtype float16

See minidiff/tools/verify.py for what is compared and the tolerances. The reference libraries' progress bars and
log messages are silenced while it runs, so the table is what the user sees.
"""

from contextlib import contextmanager

HELP = "compare minidiff with diffusers/transformers on a checkpoint (every network and every sampler)"


def add_arguments(parser):
    parser.add_argument("path", help="a diffusers model folder or a single checkpoint file")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="dtype of both libraries' networks (tolerances grow with lower precision)")
    parser.add_argument("--steps", type=int, default=3, help="sampler steps of each short run")
    parser.add_argument("--size", type=int, default=None, help="picture side in pixels (default 64)")
    parser.add_argument("--allow-pickle", action="store_true", help="read a pickle checkpoint you trust")
    parser.add_argument("--prediction-type", choices=("epsilon", "v_prediction"), default=None,
                        help="what the U-Net predicts; required for SD 2.x single files")


@contextmanager
def quiet_reference_libraries():
    """diffusers' and transformers' progress bars off and their log level at errors ("Loading weights", "Loading
    pipeline components", backend fallbacks, dtype notes), restored afterwards."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    saved = [(library.get_verbosity(), library.is_progress_bar_enabled()) for library in libraries]
    for library in libraries:
        library.set_verbosity_error()
        library.disable_progress_bar()
    try:
        yield
    finally:
        for library, (verbosity, bars) in zip(libraries, saved):
            library.set_verbosity(verbosity)
            if bars:
                library.enable_progress_bar()


def run(args):
    import torch

    from minidiff.tools.verify import verify

    with quiet_reference_libraries():
        checks = verify(args.path, device=args.device, dtype=getattr(torch, args.dtype), steps=args.steps,
                        size=args.size, allow_pickle=args.allow_pickle, prediction_type=args.prediction_type)
    failed = [check.name for check in checks if check.failed]
    skipped = [check.name for check in checks if check.skipped]
    ran = len(checks) - len(skipped)
    note = f"; {len(skipped)} skipped ({', '.join(skipped)})" if skipped else ""
    if failed:
        print(f"FAILED: {len(failed)} of {ran} checks ({', '.join(failed)}){note}")
        return 1
    print(f"all {ran} checks passed{note}")
    return 0
