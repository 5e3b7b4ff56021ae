"""The benchmark puts back every process-wide setting it changes.

``python -m minidiff bench`` lets cuDNN time its algorithms, turns TF32 off (the float32 reference must be
float32) and quiets diffusers' logging; a script or a test that runs a benchmark finds those settings as they
were afterwards, also when the benchmark stops on an error. No timing is asserted: the benchmark's numbers are
read by people (benchmarks/README.md).
"""

import pytest
import torch
from diffusers.utils import logging as diffusers_logging

from minidiff.tools.bench.run import BenchConfig, run_benchmark
from minidiff.tools.bench.timing import benchmark_settings


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
