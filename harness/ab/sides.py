"""The two sides of an A/B comparison: where each side's code lives, and the environment it runs in.

A side is a folder used as it is, a git ref checked out into a worktree of its own (removed again
when the comparison ends), or an environment: an interpreter (`--base-python`) and a folder first on
its import path (`--base-path`), running this suite's own code against that environment's engine.
The side's workers (harness/ab/workers.py) start with its code on their path.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.errors import PerfSuiteError


@dataclass
class Side:
    """Where one side's code comes from: a tree (a ref's worktree or a folder) whose own suite and engines
    run, or an environment (an interpreter, a folder first on the import path) running this suite's own
    code against whatever engine that environment has."""

    label: str  # "base" or "head"
    spec: str  # what the user gave
    path: Path | None  # the tree; None: an environment side, with this process's suite code
    commit: str | None = None
    python: str = sys.executable
    first: Path | None = None  # --base-path / --head-path: first on the side's import path

    def describe(self) -> str:
        return f"{self.spec} ({self.commit or self.path or self.python})"

    def import_path(self, suite: Path) -> str:
        """PYTHONPATH of the side's workers: its first folder, then its tree or this suite's code."""
        return os.pathsep.join(str(p) for p in (self.first, self.path or suite) if p is not None)


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PerfSuiteError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def repo_root(where: Path) -> Path | None:
    """The git repository `where` is in, or None (a copied tree without .git: folders still work)."""
    try:
        proc = subprocess.run(["git", "-C", str(where), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    except OSError:  # no git on this machine at all
        return None
    return Path(proc.stdout.strip()) if proc.returncode == 0 else None


def resolve_side(label: str, spec: str | None, root: Path | None, tmp: Path, env: tuple | None = None) -> Side:
    """A folder is used as it is; anything else is a git ref checked out into a worktree of its own;
    env = (python, first folder) makes an environment side. Outside a git repository (root None) the
    working tree is the current folder and only folders do."""
    python, first = env or (None, None)
    if python or first:
        if spec is not None:
            raise PerfSuiteError(f"{label}: give a ref or folder, or --{label}-python/--{label}-path, not both")
        return _environment_side(label, python, first)
    if spec is None:
        return Side(label, "working tree", root or Path.cwd())
    if Path(spec).is_dir():
        return Side(label, spec, Path(spec).resolve())
    if root is None:
        raise PerfSuiteError(
            f"{label} {spec!r} is not a folder, and {Path.cwd()} is not in a git repository, so it cannot be a "
            "ref: give both sides as folders"
        )
    commit = git(root, "rev-parse", "--verify", f"{spec}^{{commit}}")
    path = tmp / f"{label}-{commit[:12]}"
    git(root, "worktree", "add", "--detach", str(path), commit)
    return Side(label, spec, path, commit)


def _environment_side(label: str, python: str | None, first: str | None) -> Side:
    if python and not (Path(python).is_file() and os.access(python, os.X_OK)):
        raise PerfSuiteError(f"--{label}-python {python}: not an executable file")
    if first and not Path(first).is_dir():
        raise PerfSuiteError(f"--{label}-path {first}: no such folder")
    spec = " ".join(filter(None, [python and f"python {python}", first and f"path {first}"]))
    return Side(label, spec, None, python=python or sys.executable, first=Path(first).resolve() if first else None)


def suite_code(tmp: Path) -> Path:
    """A folder holding only this suite's own packages (links to them), for environment sides: their
    workers run this code whatever suite version their environment has installed, and see nothing
    else of this environment's."""
    import harness
    import perf_tests

    folder = tmp / "suite"
    folder.mkdir(exist_ok=True)
    for module in (harness, perf_tests):
        link = folder / module.__name__
        if not link.exists():
            link.symlink_to(Path(module.__file__).parent, target_is_directory=True)
    return folder


@contextmanager
def checked_out(
    base_spec: str | None, head_spec: str | None, base_env: tuple | None = None, head_env: tuple | None = None
) -> Iterator[tuple[list[Side], Path]]:
    """([base, head], this suite's code folder), each side resolved; worktrees made for refs are removed
    on the way out."""
    root = repo_root(Path.cwd())
    tmp = Path(tempfile.mkdtemp(prefix="llm-perf-ab-"))
    sides: list[Side] = []
    try:
        if base_spec is None and not any(base_env or ()):
            raise PerfSuiteError("ab needs a base: a git ref or folder, or --base-python / --base-path")
        sides.append(resolve_side("base", base_spec, root, tmp, base_env))
        sides.append(resolve_side("head", head_spec, root, tmp, head_env))
        yield sides, suite_code(tmp)
    finally:
        for s in sides:
            if s.commit is not None and root is not None:
                subprocess.run(
                    ["git", "-C", str(root), "worktree", "remove", "--force", str(s.path)], capture_output=True
                )
        shutil.rmtree(tmp, ignore_errors=True)


PAD = "LLM_PERF_LAYOUT_PAD"  # an environment variable of random length: where the stack starts, drawn anew
PAD_MAX = 4096  # bytes: a page of stack offsets


def worker_env(side: Side, other: Side | None, suite: Path, rng: random.Random | None = None) -> dict:
    """This process's environment with the side's own import path first. Where the environment ends
    moves the stack, and with it a process's speed by a few percent (Mytkowicz et al. 2009, "Producing
    wrong data without doing anything obviously wrong!"): a side whose path is shorter is padded to
    the other's length, and each process then gets a random pad of its own, so the layout is a chance
    each sweep draws again, never a lean of one side (Curtsinger & Berger 2013, Stabilizer: randomise
    layout to make it noise)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", PAD)}
    path = side.import_path(suite)
    longest = max(len(path), len(other.import_path(suite)) if other else 0)
    extra = (rng or random.Random()).randrange(PAD_MAX)
    return {**env, "PYTHONPATH": path, PAD: "x" * (longest - len(path) + extra)}
