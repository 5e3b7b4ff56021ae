"""The package's floors (minidiff/__init__.py draws them): the learner's path never imports what sits beside or
above it, no two modules import each other in a circle, and files stay short enough to read in one sitting."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minidiff"
LEARNERS_PATH = ("atomic", "sampler_names", "noise", "schedule", "brownian", "samplers", "models", "loading", "pipelines", "images", "canny")
ABOVE_OR_BESIDE = ("tools", "course", "commands", "cli", "check", "train", "fast", "data")
# Files allowed past MAX_LINES, each because one concept needs the room.
MAX_LINES = 300
LONG_FILES = {
    "loading/single_file.py": "the one rename table between CompVis/SGM single files and diffusers, with its checks",
    "models/config.py": "the four network configs and the one policy they share for config.json keys",
    "tools/verify.py": "the whole-model comparison with diffusers, row by row",
}


def module_name(path, root=PACKAGE):
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name, root):
    """Whether ``name`` (minidiff.a.b) is a module or package file under ``root``."""
    path = root.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(path, top_level_only=False, root=PACKAGE):
    """The minidiff modules a file imports (relative imports resolved; ``from a import b`` names a.b when b is a
    module), inside functions too unless ``top_level_only``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("minidiff"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base.startswith("minidiff"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    yield sub if is_module(sub, root) else base


def files():
    return sorted(PACKAGE.rglob("*.py"))


def floor(module):
    return module.split(".")[1] if module.count(".") else ""


def test_the_learners_path_imports_nothing_that_sits_beside_or_above_it():
    offenders = [
        f"{module_name(path)} imports {target}"
        for path in files() if floor(module_name(path)) in LEARNERS_PATH
        for target in imported_modules(path) if floor(target) in ABOVE_OR_BESIDE
    ]
    assert not offenders, offenders


def test_no_module_imports_itself_through_a_circle_at_import_time():
    graph = {module_name(path): set(imported_modules(path, top_level_only=True)) for path in files()}
    state = {}  # module -> "open" while its imports are being followed, "done" after

    def visit(module, trail):
        if state.get(module) == "open":
            raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(module):] + [module]))
        if state.get(module) == "done" or module not in graph:
            return
        state[module] = "open"
        for target in sorted(graph[module] - {module}):
            visit(target, trail + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_files_stay_short_except_where_one_concept_needs_the_room():
    long = {str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines()) for path in files()}
    too_long = {name: n for name, n in long.items() if n > MAX_LINES and name not in LONG_FILES}
    assert not too_long, f"files over {MAX_LINES} lines: {too_long}; split them, or say in LONG_FILES why not"


def test_the_import_reader_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The checks above would pass on an empty answer; this shows the reader finds what they look for."""
    root = tmp_path / "minidiff"
    for module in ("samplers/x.py", "tools/__init__.py", "tools/bench.py", "course/__init__.py"):
        (root / module).parent.mkdir(parents=True, exist_ok=True)
        (root / module).write_text("")
    (root / "samplers" / "x.py").write_text("def f():\n    from ..tools import bench\n    import minidiff.course\n")
    found = set(imported_modules(root / "samplers" / "x.py", root=root))
    assert found == {"minidiff.tools.bench", "minidiff.course"}
    assert not set(imported_modules(root / "samplers" / "x.py", top_level_only=True, root=root))
