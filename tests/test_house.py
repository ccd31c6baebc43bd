"""The house rules, checked on the source: no import circles in harness/, small modules and short
functions there, no file of tests over 400 lines. Each rule is shown to catch a planted breach."""

import ast
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "harness"
MAX_MODULE_LINES = 320  # "about 300"
MAX_FUNCTION_LINES = 50
MAX_TEST_FILE_LINES = 400


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(tree: ast.Module, package: str) -> set[str]:
    """The modules of `package` this module imports when it is loaded: module-level imports, not those
    under `if TYPE_CHECKING:` and not those inside functions (deliberately late)."""
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == package}
    return found


def import_circles(root: Path) -> list[list[str]]:
    """Every set of modules under `root` that import one another in a circle (strongly connected
    components of more than one module, or a module importing itself)."""
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {m: runtime_imports(ast.parse(p.read_text()), root.name) & paths.keys() for m, p in paths.items()}
    order, low, stack, circles = {}, {}, [], []

    def visit(m: str) -> None:
        order[m] = low[m] = len(order)
        stack.append(m)
        for d in graph[m]:
            if d not in order:
                visit(d)
                low[m] = min(low[m], low[d])
            elif d in stack:
                low[m] = min(low[m], order[d])
        if low[m] == order[m]:
            part = stack[stack.index(m) :]
            del stack[stack.index(m) :]
            if len(part) > 1 or m in graph[m]:
                circles.append(sorted(part))

    for m in sorted(graph):
        if m not in order:
            visit(m)
    return circles


def long_parts(
    root: Path, module_lines: float = MAX_MODULE_LINES, function_lines: float = MAX_FUNCTION_LINES
) -> list[str]:
    """Modules under `root` over module_lines and functions over function_lines, named."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if (n := len(text.splitlines())) > module_lines:
            found.append(f"{path.name}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if (n := node.end_lineno - node.lineno + 1) > function_lines:
                    found.append(f"{path.name}:{node.name}: {n} lines")
    return found


def test_harness_has_no_import_circles():
    assert import_circles(HARNESS) == []


def test_harness_modules_and_functions_stay_small():
    assert long_parts(HARNESS) == []


@pytest.mark.parametrize("folder", ["tests", "experiments/tests"])
def test_no_file_of_tests_is_over_400_lines(folder):
    assert long_parts(ROOT / folder, MAX_TEST_FILE_LINES, math.inf) == []


@pytest.fixture
def package(tmp_path):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (root / "b.py").write_text("from pkg.a import A\n\ndef late():\n    from pkg.c import C\n")
    (root / "c.py").write_text("import pkg.b\n")
    return root


def test_a_type_only_or_late_import_is_no_circle(package):
    assert import_circles(package) == []


def test_a_planted_circle_is_found(package):
    (package / "a.py").write_text("from pkg import c\n")  # a -> c -> b -> a
    assert import_circles(package) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_a_long_function_and_module_are_named(package):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (package / "c.py").write_text(f"def long():\n{body}\n" + "\n" * MAX_MODULE_LINES)
    assert long_parts(package) == [f"c.py: {MAX_MODULE_LINES + MAX_FUNCTION_LINES + 1} lines", "c.py:long: 51 lines"]
    assert long_parts(package, 400, math.inf) == []  # a file of tests: only its length counts
