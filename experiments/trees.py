"""Two trees of this repository for an experiment: a base at a commit, and a head made by applying a
patch from experiments/regressions/ to a copy of it. Worktrees in a temporary folder, removed after."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ROOT / "experiments" / "regressions"


def _git(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def patch_path(name: str) -> Path:
    path = PATCHES / f"{name}.patch"
    if not path.exists():
        valid = ", ".join(sorted(p.stem for p in PATCHES.glob("*.patch")))
        raise SystemExit(f"no patch {name!r} in {PATCHES}; valid: {valid}")
    return path


@contextmanager
def trees(commit: str, patches: list[str]) -> Iterator[tuple[Path, dict[str, Path]]]:
    """(base folder, {patch name: head folder}) at `commit`; each head is the base with its patch applied."""
    commit = _git("rev-parse", "--verify", f"{commit}^{{commit}}")
    tmp = Path(tempfile.mkdtemp(prefix="llm-perf-trees-"))
    made: list[Path] = []
    try:
        base = tmp / "base"
        _git("worktree", "add", "--detach", str(base), commit)
        made.append(base)
        heads = {}
        for name in patches:
            head = tmp / name
            _git("worktree", "add", "--detach", str(head), commit)
            made.append(head)
            _git("apply", str(patch_path(name)), cwd=head)
            heads[name] = head
        yield base, heads
    finally:
        for path in made:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
