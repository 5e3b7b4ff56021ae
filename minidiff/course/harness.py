"""The exercise harness: the record of an exercise, loading a learner's function, running it and comparing.

A checker is a function ``check(fn) -> number of cases`` registered with ``@exercise(name, lesson, summary)``.
It calls the learner's ``fn`` on random inputs through ``call`` and compares each answer with minidiff's through
``compare``, which raises ``Mismatch`` with the case, the element that differs, and a hint (or the name of the
known mistake the answer equals). ``run_check`` turns that into the one-line verdict ``python -m minidiff.check``
prints, and ``main`` is that command. The checkers themselves are in this package's lesson modules.
"""

import argparse
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent.parent
EXERCISES_DIR = ROOT / "lessons" / "exercises"


class Mismatch(Exception):
    """The learner's function gave a wrong answer; the message says in which case, where, and why."""


class LearnerError(Exception):
    """The learner's function raised an exception (other than NotImplementedError) in one case."""

    def __init__(self, case, error):
        super().__init__(case)
        self.case, self.error = case, error


@dataclass
class Exercise:
    name: str
    lesson: str  # the lesson that explains it, e.g. "01-forward-diffusion"
    summary: str  # one line for --list
    check: object  # check(fn) -> number of cases; raises Mismatch or LearnerError


# name -> Exercise, in the order of the lessons; filled by the lesson modules that minidiff/course/__init__.py imports
EXERCISES = {}


def exercise(name, lesson, summary):
    """Register ``check(fn)`` as the checker of exercise ``name``."""

    def register(check):
        EXERCISES[name] = Exercise(name, lesson, summary, check)
        return check

    return register


def call(fn, case, *args):
    """fn(*args), with any exception other than NotImplementedError tagged with the case that raised it."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except Exception as exc:
        raise LearnerError(case, exc) from exc


def close(a, b, rtol, atol):
    return a.shape == b.shape and bool(((a.double() - b.double()).abs() <= atol + rtol * b.double().abs()).all())


def compare(got, expected, case, hint, mistakes=None, rtol=1e-4, atol=1e-5):
    """Raise Mismatch unless ``got`` is a tensor of ``expected``'s shape with values within atol + rtol |expected|.

    mistakes: {description: tensor} of what common wrong formulas give; if ``got`` equals one, it is named.
    """
    if not isinstance(got, torch.Tensor):
        raise Mismatch(f"{case}: expected a torch.Tensor, got {type(got).__name__}. {hint}")
    if got.shape != expected.shape:
        raise Mismatch(
            f"{case}: your result has shape {tuple(got.shape)}, expected {tuple(expected.shape)}. {hint}"
        )
    if not got.is_floating_point():
        raise Mismatch(f"{case}: your result has dtype {got.dtype}; expected floating point ({expected.dtype}).")
    got, expected = got.detach(), expected.detach()
    diff = (got.double() - expected.double()).abs()
    bad = diff > atol + rtol * expected.double().abs()
    if not bad.any():
        return float(diff.max()) if diff.numel() else 0.0
    index = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0]) if torch.isfinite(diff).all() else tuple(
        int(i) for i in torch.nonzero(bad)[0]
    )
    message = (
        f"{case}: {int(bad.sum())} of {bad.numel()} values differ; the largest difference is "
        f"{float(diff[index]):.3g} at index {list(index)}: you gave {float(got[index]):.6g}, "
        f"expected {float(expected[index]):.6g}."
    )
    for description, wrong in (mistakes or {}).items():
        if close(got, wrong, rtol, atol):
            raise Mismatch(f"{message}\nYour result equals {description}.")
    raise Mismatch(f"{message}\nHint: {hint}")


def randn(generator, *shape):
    return torch.randn(*shape, generator=generator)


# --------------------------------------------------------------------------------------------------------------
# The command line


def load_function(path, name):
    """Import the file at ``path`` and return its function ``name``; raise ValueError with advice if impossible."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no file at {path}; give the file that defines {name}() with --file PATH")
    spec = importlib.util.spec_from_file_location(f"exercise_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception:
        raise ValueError(f"{path} could not be imported:\n{traceback.format_exc(limit=-1)}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{path} defines no function named {name}(); keep the name and signature of the stub")
    return fn


def run_check(name, path=None, out=sys.stdout):
    """Check exercise ``name`` against the function in ``path`` (default: its stub). Returns the exit status."""
    ex = EXERCISES[name]
    path = Path(path) if path else EXERCISES_DIR / f"{name}.py"
    print(f"checking {name}() from {path}", file=out)
    try:
        fn = load_function(path, name)
        cases = ex.check(fn)
    except ValueError as exc:
        print(f"FAIL: {exc}", file=out)
        return 1
    except NotImplementedError:
        print(f"FAIL: {name}() is not implemented yet: replace the `raise NotImplementedError` in {path} with your "
              f"code (lessons/{ex.lesson}.md explains it).", file=out)
        return 1
    except LearnerError as exc:
        error = exc.error  # the traceback from the learner's function down, without the checker's own frame
        error = "".join(traceback.format_exception(type(error), error, error.__traceback__.tb_next))
        print(f"FAIL: {exc.case}: your function raised an exception:\n{error}", file=out)
        return 1
    except Mismatch as exc:
        print(f"FAIL: {exc}", file=out)
        return 1
    print(f"PASS: {name}() matches minidiff in all {cases} cases.", file=out)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minidiff.check",
        description="Check an exercise from lessons/exercises/ against minidiff's own code.",
    )
    parser.add_argument("exercise", nargs="?", help="the exercise to check (see --list)")
    parser.add_argument("--file", help="the Python file that defines the function (default: its stub in "
                                       "lessons/exercises/)")
    parser.add_argument("--list", action="store_true", help="list the exercises")
    args = parser.parse_args(argv)
    if args.list or args.exercise is None:
        width = max(map(len, EXERCISES))
        for ex in EXERCISES.values():
            print(f"{ex.name:<{width}}  lesson {ex.lesson:<22}  {ex.summary}")
        return 0
    if args.exercise not in EXERCISES:
        print(f"error: unknown exercise {args.exercise!r}; choose one of {', '.join(EXERCISES)}", file=sys.stderr)
        return 2
    return run_check(args.exercise, args.file)
