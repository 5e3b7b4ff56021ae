"""The sampler benchmarks' own logic: where a sampler's scores hold, and how many steps fit a budget."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import sampler_nfe  # noqa: E402
import sampler_steps  # noqa: E402

from minidiff.samplers import SchedulerConfig  # noqa: E402


def test_fewest_steps_is_where_every_larger_count_holds():
    curve = {8: (0.2, 0.1), 12: (0.9, 0.8), 20: (0.5, 0.4), 30: (0.92, 0.85), 50: (0.95, 0.9)}
    assert sampler_steps.fewest_steps(curve) == 30  # 12 holds, but 20 does not: not from 12
    assert sampler_steps.fewest_steps({8: (0.9, 0.9), 50: (0.95, 0.9)}) == 8
    assert sampler_steps.fewest_steps({8: (0.2, 0.9), 50: (0.95, 0.9)}) == 50  # one rate off is enough to fail


def test_karras_variants_are_measured_only_where_asked():
    labels = [label for label, _, _ in sampler_steps.runs(("lms", "ddim", "euler"), karras_for=("lms",))]
    assert labels == ["lms", "lms karras", "ddim", "euler"]


def test_steps_within_a_budget_count_every_network_call():
    config = SchedulerConfig()
    assert sampler_nfe.steps_within("euler", config, 8) == 8
    assert sampler_nfe.steps_within("heun", config, 8) == 4  # 2 calls a step but the last: 7 calls
    assert sampler_nfe.steps_within("dpm2", config, 4) == 2
