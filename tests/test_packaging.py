"""minidiff as a Python package: `pip install .` gives the package and the `minidiff` command, requirements.txt
lists exactly what the package imports, and without the repository's weights/ the command says what to pass.

The wheel is built offline (``pip wheel --no-build-isolation`` with the setuptools of requirements-dev.txt) from a
copy of the sources, so the checkout gets no build/ folder.
"""

import ast
import configparser
import email
import importlib.metadata
import os
import pkgutil
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

from minidiff import cli
from minidiff.commands import pipeline_options

ROOT = Path(__file__).resolve().parents[1]
# The libraries minidiff is compared with: only its verification tools import them, from requirements-dev.txt.
REFERENCE_LIBRARIES = {"diffusers", "transformers"}


def imported_modules(folder):
    """The top-level names of every module the .py files under ``folder`` import (inside functions too)."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:  # level > 0: a relative import
                names.add(node.module.split(".")[0])
    return names


def requirements(path):
    """{distribution name: Requirement} of a requirements file's own lines (not the files it includes with -r)."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    found = [Requirement(line) for line in lines if line and not line.startswith(("#", "-"))]
    return {r.name.lower(): r for r in found}


def test_requirements_txt_lists_exactly_the_third_party_modules_minidiff_imports():
    third_party = imported_modules(ROOT / "minidiff") - set(sys.stdlib_module_names) - {"minidiff"}
    distributions = importlib.metadata.packages_distributions()  # import name -> distributions, e.g. PIL -> pillow
    needed = {d.lower() for module in third_party - REFERENCE_LIBRARIES for d in distributions[module]}
    listed = set(requirements(ROOT / "requirements.txt"))
    assert not needed - listed, f"minidiff/ imports {sorted(needed - listed)}: add them to requirements.txt"
    assert not listed - needed, f"requirements.txt lists {sorted(listed - needed)}, which minidiff/ never imports"
    assert str(requirements(ROOT / "requirements.txt")["torch"].specifier) == "==2.13.0"  # the CPU build on disk
    assert REFERENCE_LIBRARIES <= set(requirements(ROOT / "requirements-dev.txt"))


def test_the_wheel_holds_the_package_the_minidiff_command_and_requirements_txt_as_its_dependencies(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT / "minidiff", source / "minidiff", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "--wheel-dir", tmp_path / "dist", source], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("minidiff-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        (info,) = {name.split("/")[0] for name in files if ".dist-info/" in name}
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(f"{info}/entry_points.txt").decode())

    modules = {p.relative_to(source).as_posix() for p in (source / "minidiff").rglob("*.py")}
    assert {name for name in files if name.endswith(".py")} == modules  # namespace folders (train/) included
    assert {name.split("/")[0] for name in files} == {"minidiff", info}  # no tests/, lessons/ or weights/
    assert pkgutil.resolve_name(entry_points["console_scripts"]["minidiff"]) is cli.main
    dependencies = {r.name.lower(): r for r in map(Requirement, metadata.get_all("Requires-Dist"))}
    assert dependencies == requirements(ROOT / "requirements.txt")


def test_without_the_bundled_model_generate_says_in_one_line_to_pass_model(tmp_path, capsys, monkeypatch):
    # An installed package: the folder beside it holds no weights/.
    monkeypatch.setattr(pipeline_options, "BUNDLED_MODEL", tmp_path / "site-packages" / "weights")
    code = cli.main(["generate", "a red circle above a blue square", "--out", str(tmp_path / "x.png")])
    error, *rest = capsys.readouterr().err.splitlines()
    assert code == 1 and error.startswith(f"error: no bundled model at {tmp_path / 'site-packages' / 'weights'}")
    assert "pass --model PATH" in error and "set MINIDIFF_WEIGHTS" in error
    assert rest == ["(run again with --debug for the full traceback)"] and not (tmp_path / "x.png").exists()


def test_minidiff_weights_names_the_bundled_model_else_it_is_the_checkouts_weights_folder(tmp_path):
    show = "from minidiff.commands import pipeline_options as p; print(p.BUNDLED_MODEL)"
    environment = {k: v for k, v in os.environ.items() if k != "MINIDIFF_WEIGHTS"}

    def bundled_model(**variables):
        return subprocess.run([sys.executable, "-c", show], env={**environment, **variables}, cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()

    assert bundled_model(MINIDIFF_WEIGHTS=str(tmp_path)) == str(tmp_path)
    assert bundled_model() == str(ROOT / "weights")
    assert pipeline_options.bundled_model() == ROOT / "weights"  # found from the checkout, as the README runs it
