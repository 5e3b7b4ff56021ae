"""Build the lesson notebooks (notebooks/NN-topic.ipynb) from their readable sources (notebooks/src/NN-topic.py).

    python notebooks/build_notebooks.py              write every .ipynb from its source, without outputs
    python notebooks/build_notebooks.py --check      exit 1 if a .ipynb is not what its source gives
    python notebooks/build_notebooks.py --execute    build, then run each notebook top to bottom; its figures go to
                                                     outputs/figures/ (git-ignored; outputs are not stored)
    python notebooks/build_notebooks.py --execute 02 only the notebooks whose names start with 02
    MINIDIFF_FIGURES=lessons/figures python notebooks/build_notebooks.py --execute
                                                     rebuild the committed lesson figures (lesson authors)

Edit the sources, not the .ipynb files: a source is a plain Python file in the "percent" format that Jupytext
and VS Code also read. A line ``# %%`` starts a code cell; ``# %% [markdown]`` starts a markdown cell whose
lines are comments (the leading ``# `` is removed). Every notebook begins with the SETUP cell below, which makes
the repository importable and defines ``savefig`` for the lesson figures. A notebook run by a student, in
jupyter or here, writes its figures to outputs/figures/, so the committed ones in lessons/figures/ stay as they
are (and a ``git pull`` never conflicts with them); MINIDIFF_FIGURES, a folder relative to the repository root
(or absolute), sends them elsewhere.

tests/test_notebooks.py runs every notebook with ``execute`` and checks that the .ipynb files match their sources.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent
SOURCES = NOTEBOOKS / "src"
ROOT = NOTEBOOKS.parent

SETUP = '''\
# Setup, the same in every notebook: import minidiff from this repository and save figures for the lessons.
import os
import sys
from pathlib import Path

ROOT = next(p for p in (Path.cwd().resolve(), *Path.cwd().resolve().parents) if (p / "minidiff").is_dir())
sys.path.insert(0, str(ROOT))
# Figures go to outputs/figures/ (not in git); MINIDIFF_FIGURES=lessons/figures rebuilds the committed ones.
FIGURES = ROOT / os.environ.get("MINIDIFF_FIGURES", "outputs/figures")
FIGURES.mkdir(parents=True, exist_ok=True)


def savefig(fig, name, dpi=80):
    """Save a figure for the lesson text as a PNG with a 256-colour palette, which keeps the file small."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    Image.open(buffer).convert("RGB").quantize(256).save(FIGURES / name, optimize=True)'''

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def parse_cells(text):
    """Split a percent-format source into [(kind, source)] with kind "code" or "markdown"."""
    cells, kind, lines = [], None, []

    def flush():
        source = "\n".join(lines).strip("\n")
        if kind is not None and source:
            cells.append((kind, source))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind == "markdown":
            if line and not line.startswith("#"):
                raise ValueError(f"a markdown cell line must be a comment, found {line!r}")
            lines.append(line[2:] if line.startswith("# ") else line[1:])
        elif kind == "code":
            lines.append(line)
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"code before the first '# %%' line: {line!r}")
    flush()
    return cells


def build(source_path):
    """The notebook (an nbformat NotebookNode, no outputs) of one source file."""
    cells = parse_cells(Path(source_path).read_text())
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    if not cells or cells[0][0] != "markdown":
        raise ValueError(f"{source_path}: a notebook starts with a markdown cell (its title)")
    cells.insert(1, ("code", SETUP))
    for i, (kind, source) in enumerate(cells):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(make(source, id=f"cell-{i:02d}"))  # fixed ids, so a rebuild changes nothing in git
    nbformat.validate(nb)
    return nb


def notebook_path(source_path):
    return NOTEBOOKS / (Path(source_path).stem + ".ipynb")


def sources():
    return sorted(SOURCES.glob("[0-9][0-9]-*.py"))


def kernel_manager(folder):
    """A kernel manager for a python3 kernel run by this very interpreter (sys.executable).

    The kernelspec that ipykernel installs starts "python" from the PATH, which in a virtual environment that was
    not activated is another Python without minidiff's dependencies; this one cannot be.
    """
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = Path(folder) / "minidiff-python"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (minidiff)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelManager(kernel_name="minidiff-python", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder)]))


def execute(path, figures=None, timeout=300):
    """Run the notebook at ``path`` top to bottom in a fresh kernel, its working folder notebooks/.

    figures: where its figures go (default: $MINIDIFF_FIGURES, else outputs/figures/). Returns the executed
    notebook (the file is not changed). A failing cell raises nbclient's CellExecutionError, which shows the cell
    and its traceback.
    """
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
    if figures is not None:
        env["MINIDIFF_FIGURES"] = str(figures)
    with tempfile.TemporaryDirectory(prefix="minidiff-kernel-") as folder:
        client = NotebookClient(nb, km=kernel_manager(folder), timeout=timeout,
                                resources={"metadata": {"path": str(Path(path).parent)}})
        client.execute(env=env)
    return nb


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build (and optionally run) the lesson notebooks from notebooks/src/.")
    parser.add_argument("--check", action="store_true", help="only check that every .ipynb matches its source")
    parser.add_argument("--execute", action="store_true",
                        help="run the notebooks, writing their figures to outputs/figures/ (or $MINIDIFF_FIGURES)")
    parser.add_argument("only", nargs="*", help="name prefixes of the notebooks to run with --execute (e.g. 02)")
    args = parser.parse_args(argv)

    stale = []
    for source in sources():
        text = nbformat.writes(build(source)) + "\n"
        target = notebook_path(source)
        if args.check:
            if not target.is_file() or target.read_text() != text:
                stale.append(target.name)
        elif not target.is_file() or target.read_text() != text:
            target.write_text(text)
            print(f"wrote {target.relative_to(ROOT)}")
    if args.check:
        if stale:
            print(f"out of date: {', '.join(stale)}; run python notebooks/build_notebooks.py")
            return 1
        print("every notebook matches its source")
        return 0
    if args.execute:
        for source in sources():
            if args.only and not any(source.stem.startswith(prefix) for prefix in args.only):
                continue
            start = time.perf_counter()
            execute(notebook_path(source))
            print(f"ran {notebook_path(source).name} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
