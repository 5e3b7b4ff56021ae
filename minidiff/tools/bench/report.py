"""What the benchmark reports: one Row per workload and dtype, holding a Measurement per variant; the machine and
library versions; a line per measurement as it is taken (each result is printed once, there), a summary table at
the end, and the JSON file. Peak memory is measured on CUDA only; on the CPU it is "-" (null in the JSON), as is
every number that was not measured or does not apply (an error against diffusers for diffusers itself)."""

import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class Measurement:
    """One variant of one library on one workload: median (and fastest) ms, peak MB above the weights (None where
    not measured: off CUDA), max relative error against the float32 reference and against diffusers' eager output
    in the same dtype."""

    library: str
    variant: str
    ms: float = math.nan
    min_ms: float = math.nan
    peak_mb: float | None = None
    rel_err_fp32: float = math.nan
    rel_err_vs_diffusers: float = math.nan
    setup_s: float = math.nan  # one-time cost: capture or compilation
    error: str = ""


@dataclass
class Row:
    """A workload in one dtype, with every measured variant of both libraries. ``extra`` holds what later
    variants need (tensors and tuples of them: inputs, reference outputs; left out of the JSON) and what the
    report shows besides (FLOPs, kernel times)."""

    workload: str
    dtype: str
    measurements: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def get(self, library, variant):
        return next((m for m in self.measurements if (m.library, m.variant) == (library, variant)), None)

    def best(self, library, own_only=True):
        """The fastest variant of ``library``; own_only leaves out diffusers run through minidiff's CUDA graph."""
        done = [m for m in self.measurements if m.library == library and not m.error and not math.isnan(m.ms)
                and not (own_only and library == "diffusers" and "graph" in m.variant)]
        return min(done, key=lambda m: m.ms, default=None)


def forget_tensors(rows):
    """Drop the inputs and outputs kept in the rows for later variants (they stay out of the JSON anyway)."""
    for row in rows:
        for key in [k for k, v in row.extra.items() if torch.is_tensor(v) or isinstance(v, tuple)]:
            del row.extra[key]


def environment(device):
    """The command, library versions and machine; on the CPU also the load average (other programs on the same
    cores slow every measurement)."""
    import diffusers
    import transformers

    info = {"command": " ".join(["python -m minidiff bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"]
            else " ".join(sys.argv),
            "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "machine": platform.machine()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:
        info.update(cpu_threads=torch.get_num_threads(), load_average_at_start=os.getloadavg())
    return info


MEASUREMENT_HEADER = (f"{'workload':26s} {'dtype':9s} {'library':9s} {'variant':44s} {'ms':>9s} {'min ms':>9s} "
                      f"{'peak MB':>8s} {'err fp32':>8s} {'err vs d':>8s} {'setup s':>7s}")


def measurement_line(row, m):
    """The line printed as each measurement is taken, under ``MEASUREMENT_HEADER``; "-" where nothing was measured."""
    return (f"{row.workload:26s} {row.dtype:9s} {m.library:9s} {m.variant:44s} {fmt(m):>9s} "
            f"{fmt(m, 'min_ms'):>9s} {fmt(m, 'peak_mb', '{:.0f}'):>8s} {fmt(m, 'rel_err_fp32', '{:.1e}'):>8s} "
            f"{fmt(m, 'rel_err_vs_diffusers', '{:.1e}'):>8s} {fmt(m, 'setup_s', '{:.1f}'):>7s} {m.error}").rstrip()


def without_nan(value):
    """``value`` with every NaN or infinite float, in lists, tuples and dicts too, as None: JSON's null (a strict
    JSON reader refuses the NaN that Python's json writes by default)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(v) for v in value]
    return value


def write_json(rows, info, config, path):
    """{"environment", "config", "rows"} to ``path``, valid JSON: a number not measured or not applicable (NaN in
    a Measurement) is null; the tensors kept in rows' ``extra`` are left out."""
    payload = {
        "environment": info,
        "config": {k: [list(c) for c in v] if k == "unet_cases" else (list(v) if isinstance(v, tuple) else v)
                   for k, v in asdict(config).items()},
        "rows": [{**asdict(row), "extra": {k: v for k, v in row.extra.items()
                                           if not (torch.is_tensor(v) or isinstance(v, tuple))}} for row in rows],
    }
    with open(path, "w") as f:
        json.dump(without_nan(payload), f, indent=1, default=str, allow_nan=False)


def fmt(m, key="ms", spec="{:.2f}"):
    """One number of a Measurement as the tables show it: "-" when there is no measurement or no such number."""
    value = None if m is None else getattr(m, key)
    return "-" if value is None or math.isnan(value) else spec.format(value)


def print_tables(rows, info):
    """Per workload: each library's eager and best variant, the ratio minidiff/diffusers, peak memory, errors
    (each measurement has its own line already, printed as it was taken)."""
    print("\n" + ", ".join(f"{k}={v}" for k, v in info.items()))
    header = (f"{'workload':26s} {'dtype':9s} {'diffusers':>9s} {'best':>9s} {'minidiff':>9s} {'best':>9s} "
              f"{'ratio':>6s} {'ratio':>6s} {'floor':>6s} {'peak MB':>11s} {'err vs fp32':>17s}")
    print(header)
    print(f"{'':26s} {'':9s} {'eager ms':>9s} {'ms':>9s} {'eager ms':>9s} {'ms':>9s} {'eager':>6s} {'best':>6s} "
          f"{'ms':>6s} {'d / m':>11s} {'d / m':>17s}")
    print("-" * len(header))
    for row in rows:
        d_eager, m_eager = row.get("diffusers", "eager"), row.get("minidiff", "eager")
        d_best, m_best = row.best("diffusers"), row.best("minidiff")
        ratio = lambda a, b: "-" if a is None or b is None or math.isnan(a.ms / b.ms) else f"{a.ms / b.ms:.2f}"
        rate = info.get(f"matmul_tflops_{row.dtype}")
        floor = f"{row.extra['tflop'] / rate * 1000:.1f}" if rate and "tflop" in row.extra else "-"
        peaks = f"{fmt(d_best, 'peak_mb', '{:.0f}')}/{fmt(m_best, 'peak_mb', '{:.0f}')}"
        errs = f"{fmt(d_best, 'rel_err_fp32', '{:.1e}')}/{fmt(m_best, 'rel_err_fp32', '{:.1e}')}"
        print(f"{row.workload:26s} {row.dtype:9s} {fmt(d_eager):>9s} {fmt(d_best):>9s} {fmt(m_eager):>9s} "
              f"{fmt(m_best):>9s} {ratio(m_eager, d_eager):>6s} {ratio(m_best, d_best):>6s} {floor:>6s} "
              f"{peaks:>11s} {errs:>17s}")
    print("best = fastest variant of each library (diffusers: its own options only); ratio = minidiff / diffusers;"
          " floor = FLOPs / measured matmul rate")
    if "gpu" in info:
        print("peak MB = most CUDA memory allocated during a call, above what was allocated before it")
    else:
        print("peak MB: not measured on the CPU")
