"""The benchmark's entry point: ``run_benchmark(BenchConfig(...))``, which ``python -m minidiff bench`` calls.

For each dtype, every chosen workload in turn (U-Net, VAE, the whole run, text encoder); on the GPU then the slow
and the risky variants (torch.compile, diffusers in CUDA graphs), so that the rest is saved whatever happens.
"""

import os
import traceback
from dataclasses import dataclass

import torch

from minidiff.tools.bench.configs import build_references
from minidiff.tools.bench.report import MEASUREMENT_HEADER, environment, forget_tensors, print_tables, write_json
from minidiff.tools.bench.timing import benchmark_settings, matmul_tflops
from minidiff.tools.bench.workloads import (DtypeRun, compile_variants, diffusers_graph_variants, text_encoder_rows,
                                            text_to_image_rows, unet_rows, vae_rows)

WORKLOADS = ("unet", "vae", "text", "full")
# The order they run in, and the function that runs each.
RUN_ORDER = {"unet": unet_rows, "vae": vae_rows, "full": text_to_image_rows, "text": text_encoder_rows}


@dataclass
class BenchConfig:
    """What to run. ``unet_cases``: (batch, pixels) of the U-Net steps; ``compile_case``: the one case that also
    gets the torch.compile variants of the libraries in ``compile``; ``full_steps``: sampler steps of the whole
    run. ``repeats`` and ``max_seconds`` bound each measurement: it stops at whichever comes first."""

    device: str = "cuda"
    dtypes: tuple = ("float16",)
    workloads: tuple = WORKLOADS
    unet_cases: tuple = ((1, 512), (2, 512), (8, 512), (2, 768))
    vae_size: int = 512
    full_size: int = 512
    full_steps: int = 50
    compile: tuple = ()  # libraries to also run through torch.compile: "diffusers", "minidiff"
    compile_case: tuple = (2, 512)
    repeats: int = 20
    max_seconds: float = 10.0  # per measurement: stop repeating after this long
    tiny: bool = False


def guarded(stage, *args):
    """stage(*args), or [] if its setup fails (not one measurement: those are guarded already): the traceback is
    printed and the benchmark goes on with the next stage, so that one failure does not cost the whole run."""
    try:
        return stage(*args)
    except Exception:
        traceback.print_exc()
        return []


def run_benchmark(config, out_path=None):
    """Run every dtype of ``config``; print the tables; write JSON to ``out_path`` (also as it goes). Returns the
    rows. Process-wide settings (cuDNN, TF32, diffusers' logging) are as before when it returns."""
    device = torch.device(config.device)
    with benchmark_settings():
        info = environment(device)
        rows = []

        def save():
            if out_path is not None:
                write_json(rows, info, config, out_path)

        references = build_references(device, config.tiny)
        done = []  # (DtypeRun, {workload: its rows}) per dtype
        for dtype_name in config.dtypes:
            if device.type == "cuda" and "unet" in config.workloads:
                info[f"matmul_tflops_{dtype_name}"] = round(matmul_tflops(device, getattr(torch, dtype_name)), 1)
                print(f"{dtype_name} matrix product: {info[f'matmul_tflops_{dtype_name}']} TFLOP/s", flush=True)
            print(f"{dtype_name} on {info.get('gpu', 'cpu')}:", MEASUREMENT_HEADER, sep="\n", flush=True)
            run = DtypeRun(config, references, dtype_name, rows, save)
            done.append((run, {name: guarded(workload, run) for name, workload in RUN_ORDER.items()
                               if name in config.workloads}))
        if device.type == "cuda":  # the slow and the risky variants last, so that the rest is saved whatever happens
            if config.compile:
                print(f"torch.compile of {', '.join(config.compile)} ({config.dtypes[0]}):", flush=True)
                run, made = done[0]
                guarded(compile_variants, run, made.get("unet", []), made.get("full", []))
            print("diffusers through CUDA graphs:", flush=True)
            for run, made in done:
                guarded(diffusers_graph_variants, run, made.get("unet", []), made.get("vae", []))
        forget_tensors(rows)
        if device.type == "cpu":
            info["load_average_at_end"] = os.getloadavg()
        save()
        print_tables(rows, info)
    return rows
