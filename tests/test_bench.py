"""The benchmark puts back every process-wide setting it changes, and measures fairly within a machine's memory.

``python -m minidiff bench`` lets cuDNN time its algorithms, turns TF32 off (the float32 reference must be
float32) and quiets diffusers' logging; a script or a test that runs a benchmark finds those settings as they
were afterwards, also when the benchmark stops on an error. Each measurement is timed after an untimed call, each
workload holds one library's copies of the models at a time (SD 1.5's U-Net is 3.4 GB in float32), and each
result is printed once, with "-" for what was not measured. No timing is asserted: the benchmark's numbers are
read by people (benchmarks/README.md).
"""

import json
import math
import time
import weakref

import pytest
import torch
from diffusers.utils import logging as diffusers_logging

from minidiff.tools.bench.report import Measurement, Row, write_json
from minidiff.tools.bench.run import BenchConfig, run_benchmark
from minidiff.tools.bench.timing import benchmark_settings
from minidiff.tools.bench.workloads import DtypeRun, measure


def process_settings():
    return {"cudnn.benchmark": torch.backends.cudnn.benchmark, "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "diffusers verbosity": diffusers_logging.get_verbosity()}


def apply(settings):
    torch.backends.cudnn.benchmark = settings["cudnn.benchmark"]
    torch.backends.cudnn.allow_tf32 = settings["cudnn.allow_tf32"]
    torch.backends.cuda.matmul.allow_tf32 = settings["cuda.matmul.allow_tf32"]
    diffusers_logging.set_verbosity(settings["diffusers verbosity"])


# What the benchmark measures under, and the opposite of each, so that a setting left changed shows.
BENCHMARK = {"cudnn.benchmark": True, "cudnn.allow_tf32": False, "cuda.matmul.allow_tf32": False,
             "diffusers verbosity": diffusers_logging.ERROR}
OPPOSITE = {"cudnn.benchmark": False, "cudnn.allow_tf32": True, "cuda.matmul.allow_tf32": True,
            "diffusers verbosity": diffusers_logging.WARNING}


@pytest.fixture
def opposite_settings():
    """Every setting the benchmark changes set to the other value; the test process's own put back afterwards."""
    saved = process_settings()
    apply(OPPOSITE)
    yield
    apply(saved)


def test_benchmark_settings_hold_inside_and_are_restored_after_an_error(opposite_settings):
    with pytest.raises(RuntimeError, match="stopped"):
        with benchmark_settings():
            assert process_settings() == BENCHMARK
            raise RuntimeError("stopped")
    assert process_settings() == OPPOSITE


def test_running_a_benchmark_workload_leaves_the_process_settings_as_they_were(opposite_settings, capsys):
    config = BenchConfig(device="cpu", dtypes=("float32",), workloads=("text",), repeats=1, tiny=True)
    (row,) = run_benchmark(config)
    assert process_settings() == OPPOSITE
    assert row.workload == "text encoder" and not any(m.error for m in row.measurements)
    assert "text encoder" in capsys.readouterr().out  # the tables were printed


def test_a_measurement_warms_up_before_timing_even_with_one_repeat(capsys):
    calls = []

    def build():
        def fn():  # the first call is slow (kernels chosen, caches filled), the others fast
            calls.append(time.perf_counter())
            time.sleep(0.3 if len(calls) == 1 else 0.0)
        return fn

    config = BenchConfig(device="cpu", repeats=1, tiny=True)
    run = DtypeRun(config, references={}, dtype_name="float32", rows=[], save=lambda: None)
    row = run.new_row("sleep")
    measure(run, row, "minidiff", "eager", build)
    (m,) = row.measurements
    assert len(calls) >= 3 and m.ms < 100  # a first call, one untimed call right before, one timed call
    assert m.peak_mb is None  # not measured on the CPU


class CopyCounter:
    """Wraps DtypeRun's model builders: for each model built, how many of the other library's are still alive."""

    def __init__(self, monkeypatch):
        self.alive = {"diffusers": weakref.WeakSet(), "minidiff": weakref.WeakSet()}
        self.others_alive = []
        for library, method in (("diffusers", "reference_copy"), ("minidiff", "minidiff_copy")):
            monkeypatch.setattr(DtypeRun, method, self.counted(library, getattr(DtypeRun, method)))

    def counted(self, library, build):
        other = "minidiff" if library == "diffusers" else "diffusers"

        def build_counted(run, name):
            self.others_alive.append(len(self.alive[other]))
            model = build(run, name)
            self.alive[library].add(model)
            return model
        return build_counted


def test_each_workload_holds_one_librarys_models_at_a_time_and_prints_each_result_once(monkeypatch, capsys):
    counter = CopyCounter(monkeypatch)
    config = BenchConfig(device="cpu", dtypes=("float32",), workloads=("unet", "vae", "text", "full"),
                         unet_cases=((1, 64),), vae_size=64, full_size=64, full_steps=1, repeats=1, tiny=True)
    rows = run_benchmark(config)
    out = capsys.readouterr().out
    assert len(counter.others_alive) == 12 and not any(counter.others_alive)  # (1 + 1 + 1 + 3) per library
    for row in rows:
        for m in row.measurements:
            assert not m.error
            words = [*row.workload.split(), row.dtype, m.library, *m.variant.split()]  # then its numbers
            lines = [line for line in out.splitlines()
                     if line.split()[: len(words)] == words and line.split()[len(words)] != "+"]
            assert len(lines) == 1, lines
    assert "nan" not in out.lower() and "peak MB: not measured on the CPU" in out


def test_the_json_report_is_strict_json_with_null_where_a_number_does_not_apply(tmp_path):
    """diffusers' own eager run has no error against diffusers; a failed variant has no time at all."""
    row = Row("unet", "float16", extra={"tflop": 1.5, "kernel_ms": math.nan})
    row.measurements = [Measurement("diffusers", "eager", ms=2.0, min_ms=1.9, rel_err_fp32=1e-3, setup_s=0.0),
                        Measurement("minidiff", "graph", error="out of memory")]
    write_json([row], {"load_average_at_start": (0.5, math.inf, 1.0)}, BenchConfig(device="cpu"), tmp_path / "r.json")

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    report = json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse)
    diffusers, failed = report["rows"][0]["measurements"]
    assert diffusers["ms"] == 2.0 and diffusers["rel_err_vs_diffusers"] is None and diffusers["peak_mb"] is None
    assert failed["ms"] is None and failed["min_ms"] is None and failed["error"] == "out of memory"
    assert report["rows"][0]["extra"] == {"tflop": 1.5, "kernel_ms": None}
    assert report["environment"]["load_average_at_start"] == [0.5, None, 1.0]
