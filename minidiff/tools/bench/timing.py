"""How the benchmark measures: wall time, peak memory, output error, GPU time by kind of kernel, FLOPs, and the
device's matrix-product rate; and the process-wide settings it measures under, restored when it is done.

Timing: untimed warm-up calls first (the benchmark always makes one right before timing), synchronise the
device around every call, take the median of the repeats. Peak memory is measured on CUDA only, on a separate
call, as the most allocated above what was allocated before it.
"""

import contextlib
import functools
import math
import statistics
import time

import torch

from minidiff.models.config import UNetConfig
from minidiff.models.unet import UNet2DConditionModel
from minidiff.tools.bench.configs import bench_configs


@contextlib.contextmanager
def benchmark_settings():
    """Measure under these settings, and put back the previous ones afterwards (also after an error):
    cuDNN times its algorithms once per shape (``cudnn.benchmark``; both libraries get the fastest), TF32 off in
    matrix products and convolutions (the float32 reference must be float32), diffusers' warnings off (casting
    a model with ``.to(dtype)`` warns each time)."""
    from diffusers.utils import logging as diffusers_logging

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32, diffusers_logging.get_verbosity()
    cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = True, False, False
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32, verbosity = saved
        diffusers_logging.set_verbosity(verbosity)


def synchronize(device):
    """Wait until the device has finished its queued work (CUDA runs asynchronously; the CPU does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device, warmup, repeats, max_seconds):
    """(median, minimum) wall time of ``fn()`` in milliseconds after ``warmup`` calls, synchronising around each
    call; stops after ``repeats`` calls or ``max_seconds``. On a shared CPU the minimum is the least disturbed run."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times, start_all = [], time.perf_counter()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
        if time.perf_counter() - start_all > max_seconds:
            break
    return statistics.median(times), min(times)


def peak_mb(fn, device):
    """(fn()'s result, peak device memory in MB allocated while it ran, above what was allocated before);
    None (not measured) off CUDA."""
    if device.type != "cuda":
        return fn(), None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    out = fn()
    synchronize(device)
    return out, (torch.cuda.max_memory_allocated(device) - before) / 2**20


def rel_error(ours, reference):
    """max |ours - reference| / max |reference|, in float64; NaN if either is missing."""
    if ours is None or reference is None:
        return math.nan
    ours, reference = ours.detach().double().cpu(), reference.detach().double().cpu()
    return ((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()


def error_text(exc):
    """A failure as the report shows it: the exception's type and the first line of its message."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


KERNEL_KINDS = (  # (kind, substrings of the kernel name), first match wins
    ("attention", ("flash", "fmha", "attention", "softmax")),
    ("convolution", ("conv", "fprop", "dgrad", "implicit", "winograd")),
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "sm90", "sm80")),
    ("group_norm", ("group_norm", "groupnorm", "rowwisemoments", "computefused")),
    ("layer_norm", ("layer_norm", "layernorm")),
    ("layout copy", ("nchwtonhwc", "nhwctonchw", "copy", "transpose", "cat")),
)


def kernel_times(fn):
    """GPU time (ms) of one fn() call by kind of kernel, from the profiler, plus the number of kernels."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    totals, count = {}, 0
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        name = event.name.lower()
        kind = next((k for k, keys in KERNEL_KINDS if any(s in name for s in keys)), "elementwise and other")
        totals[kind] = totals.get(kind, 0.0) + event.time_range.elapsed_us() / 1000
        count += 1
    totals = {k: round(v, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    return {"total": round(sum(totals.values()), 3), "kernels": count, **totals}


@functools.lru_cache
def unet_tflop(tiny, batch, pixels):
    """Floating-point operations (in 10^12) of one U-Net call, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    config = UNetConfig.from_dict(bench_configs(tiny)["unet"])
    side = pixels // 8
    with torch.device("meta"):
        unet = UNet2DConditionModel(config)
        x, context = torch.empty(batch, 4, side, side), torch.empty(batch, 77, config.cross_attention_dim)
    with FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor(500.0, device="meta"), context)
    return counter.get_total_flops() / 1e12


def matmul_tflops(device, dtype):
    """Measured rate of a large matrix product in ``dtype`` (10^12 FLOP/s): the arithmetic ceiling."""
    n = 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    ms, _ = time_ms(lambda: a @ b, device, 3, 10, 5.0)
    return 2 * n**3 / (ms / 1000) / 1e12
