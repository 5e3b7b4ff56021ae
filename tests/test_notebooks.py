"""The lesson notebooks: each runs top to bottom, matches its source, and makes the figures its lesson shows.

Every notebooks/NN-*.ipynb is executed in a fresh kernel of this interpreter (cwd notebooks/, figures written to a
temporary folder; by default a notebook writes them to the git-ignored outputs/figures/, never to the committed
lessons/figures/ unless MINIDIFF_FIGURES asks it to), and the executed copy is saved under pytest's tmp_path. A failing
cell fails the test with that cell's source and traceback. The time of each notebook is printed; each should
take about a minute on a 2-core CPU (3 minutes at most).
"""

import importlib.util
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
FIGURE_LIMIT = 150_000  # bytes per committed PNG

spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "notebooks" / "build_notebooks.py")
build_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_notebooks)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
LINK = re.compile(r"\]\(([^)#\s]+)")  # the target of a markdown link or image, without an #anchor


def linked_figures(lesson):
    """The figures/... files a lesson's markdown shows."""
    return sorted({Path(target).name for target in LINK.findall(lesson.read_text()) if target.startswith("figures/")})


def test_every_source_has_its_notebook_and_every_notebook_its_source():
    sources = {p.stem for p in build_notebooks.sources()}
    assert sources == {p.stem for p in NOTEBOOKS}
    assert {"01-forward-diffusion", "02-tiny-ddpm", "03-samplers", "11-real-checkpoints"} <= sources


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_its_source_and_stores_no_outputs(notebook):
    stored = nbformat.read(notebook, as_version=4)
    for cell in stored.cells:
        assert cell.get("outputs", []) == [] and cell.get("execution_count") is None, (
            f"{notebook.name} stores outputs; rebuild it with python notebooks/build_notebooks.py"
        )
    built = nbformat.writes(build_notebooks.build(build_notebooks.SOURCES / f"{notebook.stem}.py")) + "\n"
    assert notebook.read_text() == built, f"{notebook.name} differs from its source; run notebooks/build_notebooks.py"


@pytest.mark.parametrize("setting, folder", [(None, "outputs/figures"), ("lessons/figures", "lessons/figures")])
def test_a_notebook_writes_its_figures_to_outputs_unless_asked_to_rebuild_the_lessons(setting, folder, tmp_path,
                                                                                      monkeypatch):
    if setting is None:
        monkeypatch.delenv("MINIDIFF_FIGURES", raising=False)
    else:
        monkeypatch.setenv("MINIDIFF_FIGURES", setting)
    checkout = tmp_path / "checkout"  # a stand-in repository: the setup cell finds it by its minidiff/ folder
    (checkout / "minidiff").mkdir(parents=True)
    (checkout / "notebooks").mkdir()
    monkeypatch.chdir(checkout / "notebooks")  # where jupyter and the tests run a notebook
    monkeypatch.setattr(sys, "path", list(sys.path))  # the setup cell adds the checkout to it
    setup = {}
    exec(build_notebooks.SETUP, setup)
    assert setup["FIGURES"] == checkout / folder and setup["FIGURES"].is_dir()  # outputs/ is git-ignored


def test_parse_cells_reads_the_percent_format():
    text = "# %% [markdown]\n# # Title\n#\n# Some *text*.\n\n# %%\nx = 1\n\n# a comment\ny = 2\n"
    assert build_notebooks.parse_cells(text) == [("markdown", "# Title\n\nSome *text*."),
                                                 ("code", "x = 1\n\n# a comment\ny = 2")]
    with pytest.raises(ValueError, match="must be a comment"):
        build_notebooks.parse_cells("# %% [markdown]\nnot a comment\n")


def test_lesson_links_resolve_and_committed_figures_are_small():
    pages = sorted(LESSONS.glob("*.md"))
    assert pages, "no lessons found"
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
    for figure in (LESSONS / "figures").glob("*.png"):
        assert figure.stat().st_size < FIGURE_LIMIT, f"{figure.name} is {figure.stat().st_size} bytes"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_makes_its_lesson_figures(notebook, tmp_path, capsys):
    figures = tmp_path / "figures"
    start = time.perf_counter()
    try:
        executed = build_notebooks.execute(notebook, figures=figures, timeout=300)
    except Exception as error:  # nbclient's CellExecutionError shows the failing cell and its traceback
        pytest.fail(f"{notebook.name} failed:\n{error}", pytrace=False)
    elapsed = time.perf_counter() - start
    nbformat.write(executed, tmp_path / notebook.name)
    with capsys.disabled():
        print(f"\n{notebook.name}: {elapsed:.1f} s")

    lesson = LESSONS / f"{notebook.stem}.md"
    made = {p.name for p in figures.glob("*.png")}
    missing = [name for name in linked_figures(lesson) if name not in made] if lesson.is_file() else []
    assert not missing, f"{lesson.name} shows {missing}, which {notebook.name} did not write"
    for name in made:
        assert (figures / name).stat().st_size < FIGURE_LIMIT, f"{name} is too large for the repository"
