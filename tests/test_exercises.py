"""The exercise checker (minidiff/course/): every stub fails, every solution passes, common mistakes are named.

A checker that passed a wrong answer would teach the wrong thing, so besides the untouched stubs each exercise
is also run against a plausible wrong implementation, which must fail with a message that says what is wrong.
"""

import ast
import subprocess
import sys
import textwrap
from io import StringIO
from pathlib import Path

import pytest

from minidiff import course

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = sorted(course.EXERCISES)
# What a learner reads from the noise schedule to the pipelines; the classroom sits on top and is never imported here.
LEARNERS_PATH = [ROOT / "minidiff" / "schedule.py",
                 *(path for folder in ("samplers", "models", "pipelines", "loading")
                   for path in sorted((ROOT / "minidiff" / folder).rglob("*.py")))]
CLASSROOM = ("minidiff.course", "minidiff.check")


def run(name, path):
    out = StringIO()
    status = course.run_check(name, path, out=out)
    return status, out.getvalue()


def test_every_exercise_has_a_stub_a_solution_and_a_lesson_name():
    assert {"add_noise", "ddim_step", "cross_attention", "classifier_free_guidance", "zero_convolution",
            "euler_step", "plms_step"} <= set(EXERCISES)
    for name in EXERCISES:
        assert (ROOT / "lessons" / "exercises" / f"{name}.py").is_file(), name
        assert (ROOT / "lessons" / "solutions" / f"{name}.py").is_file(), name
        assert course.EXERCISES[name].lesson[:2].isdigit()


def imported_modules(path):
    """The absolute names of the modules the file at ``path`` imports, at any depth (relative imports resolved)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]  # e.g. ("minidiff", "samplers")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def test_checkers_live_in_the_course_and_the_learners_path_never_imports_it():
    for name in EXERCISES:
        assert course.EXERCISES[name].check.__module__.startswith("minidiff.course."), name
    assert len(LEARNERS_PATH) > 20
    for path in LEARNERS_PATH:
        upward = [m for m in imported_modules(path) if ".".join(m.split(".")[:2]) in CLASSROOM]
        assert not upward, f"{path.relative_to(ROOT)} imports {upward}; the learner's path must not import the course"


@pytest.mark.parametrize("name", EXERCISES)
def test_untouched_stub_fails_with_not_implemented(name):
    status, output = run(name, None)
    assert status == 1
    assert "not implemented yet" in output and f"lessons/exercises/{name}.py" in output


@pytest.mark.parametrize("name", EXERCISES)
def test_solution_passes(name):
    status, output = run(name, ROOT / "lessons" / "solutions" / f"{name}.py")
    assert status == 0, output
    assert output.strip().endswith("cases.") and "PASS" in output


# One plausible wrong implementation per exercise, and words the checker's message must contain.
MISTAKES = {
    "add_noise": ("""
        def add_noise(x0, noise, alphas_cumprod, t):
            ab = alphas_cumprod[t].reshape(-1, *[1] * (x0.ndim - 1))
            return ab * x0 + (1 - ab) * noise
        """, "need square roots"),
    "ddim_step": ("""
        def ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev):
            return alpha_bar_prev.sqrt() * x_t + (1 - alpha_bar_prev).sqrt() * eps
        """, "predicted x0"),
    "euler_step": ("""
        def euler_step(x, denoised, sigma, sigma_next):
            return x + (sigma - sigma_next) * (x - denoised) / sigma
        """, "(σ_next - σ) d"),
    "plms_step": ("""
        def plms_step(x, eps_history, alpha_bar, alpha_bar_prev):
            a, a_prev = alpha_bar, alpha_bar_prev
            denominator = a * (1 - a_prev).sqrt() + (a * (1 - a) * a_prev).sqrt()
            return (a_prev / a).sqrt() * x - (a_prev - a) * eps_history[0] / denominator
        """, "that is a DDIM step"),
    "cross_attention": ("""
        def cross_attention(x, context, w_q, w_k, w_v, w_out, b_out, heads):
            B, T, _ = x.shape
            split = lambda h: h.view(B, h.shape[1], heads, -1).transpose(1, 2)
            q, k, v = split(x @ w_q.T), split(context @ w_k.T), split(context @ w_v.T)
            h = (q @ k.transpose(-1, -2)).softmax(-1) @ v
            return h.transpose(1, 2).reshape(B, T, -1) @ w_out.T + b_out
        """, "without the 1/sqrt(d) scale"),
    "classifier_free_guidance": ("""
        def classifier_free_guidance(noise_uncond, noise_cond, guidance_scale):
            return noise_cond + guidance_scale * (noise_cond - noise_uncond)
        """, "starts from the unconditional"),
    "zero_convolution": ("""
        from torch import nn
        def zero_convolution(in_channels, out_channels):
            return nn.Conv2d(in_channels, out_channels, kernel_size=1)
        """, "is not zero"),
}


@pytest.mark.parametrize("name", EXERCISES)
def test_common_mistake_fails_and_is_named(name, tmp_path):
    source, words = MISTAKES[name]
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    status, output = run(name, path)
    assert status == 1
    assert words in output, output


def test_wrong_shape_reports_both_shapes(tmp_path):
    path = tmp_path / "add_noise.py"
    path.write_text("def add_noise(x0, noise, alphas_cumprod, t):\n"
                    "    ab = alphas_cumprod[t].view(-1, 1, 1, 1)\n"
                    "    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise\n")
    status, output = run("add_noise", path)
    assert status == 1
    assert "shape (5, 1, 5, 2), expected (5, 2)" in output


def test_zero_convolution_that_cannot_learn_fails(tmp_path):
    path = tmp_path / "zero_convolution.py"
    path.write_text("from torch import nn\n"
                    "def zero_convolution(i, o):\n"
                    "    conv = nn.Conv2d(i, o, 1)\n"
                    "    nn.init.zeros_(conv.weight); nn.init.zeros_(conv.bias)\n"
                    "    return conv.requires_grad_(False)\n")
    status, output = run("zero_convolution", path)
    assert status == 1 and "no gradient" in output


def test_exception_in_learner_code_names_the_case(tmp_path):
    path = tmp_path / "euler_step.py"
    path.write_text("def euler_step(x, denoised, sigma, sigma_next):\n    return x.reshape(-1, 7) + denoised\n")
    status, output = run("euler_step", path)
    assert status == 1
    assert "step 1" in output and "raised an exception" in output and "RuntimeError" in output


def test_missing_function_and_missing_file_are_explained(tmp_path):
    path = tmp_path / "other.py"
    path.write_text("def something_else():\n    pass\n")
    assert run("add_noise", path) == (1, f"checking add_noise() from {path}\nFAIL: {path} defines no function "
                                         "named add_noise(); keep the name and signature of the stub\n")
    status, output = run("add_noise", tmp_path / "absent.py")
    assert status == 1 and "no file at" in output


def test_command_line_lists_exercises_and_rejects_unknown_names():
    command = [sys.executable, "-m", "minidiff.check"]
    listing = subprocess.run(command + ["--list"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert all(name in listing for name in EXERCISES)
    unknown = subprocess.run(command + ["no_such_exercise"], capture_output=True, text=True, cwd=ROOT)
    assert unknown.returncode == 2 and "choose one of add_noise" in unknown.stderr
    solved = subprocess.run(command + ["add_noise", "--file", "lessons/solutions/add_noise.py"],
                            capture_output=True, text=True, cwd=ROOT)
    assert solved.returncode == 0 and "PASS" in solved.stdout
