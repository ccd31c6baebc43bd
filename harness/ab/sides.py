"""The two sides of an A/B comparison: where each side's code lives, and the worker process that runs it.

A side is a folder used as it is, or a git ref checked out into a worktree of its own (removed again
when the comparison ends). Its worker (harness/ab/worker.py) runs with that side's code on its path
and answers one JSON line per command on stdin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.errors import PerfSuiteError

WORKER = "harness/ab/worker.py"


@dataclass
class Side:
    label: str  # "base" or "head"
    spec: str  # what the user gave: a ref, a folder, or "working tree"
    path: Path
    commit: str | None = None

    @property
    def has_worker(self) -> bool:
        return (self.path / WORKER).exists()

    def describe(self) -> str:
        return f"{self.spec} ({self.commit or self.path})"


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


def resolve_side(label: str, spec: str | None, root: Path | None, tmp: Path) -> Side:
    """A folder is used as it is; anything else is a git ref checked out into a worktree of its own.
    Outside a git repository (root None) the working tree is the current folder and only folders do."""
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


@contextmanager
def checked_out(base_spec: str, head_spec: str | None) -> Iterator[list[Side]]:
    """[base, head], each resolved; worktrees made for refs are removed on the way out."""
    root = repo_root(Path.cwd())
    tmp = Path(tempfile.mkdtemp(prefix="llm-perf-ab-"))
    sides: list[Side] = []
    try:
        sides.append(resolve_side("base", base_spec, root, tmp))
        sides.append(resolve_side("head", head_spec, root, tmp))
        yield sides
    finally:
        for s in sides:
            if s.commit is not None and root is not None:
                subprocess.run(
                    ["git", "-C", str(root), "worktree", "remove", "--force", str(s.path)], capture_output=True
                )
        shutil.rmtree(tmp, ignore_errors=True)


def worker_env(side: Side) -> dict:
    """This process's environment with the side's own code first on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": str(side.path)}


class WorkerProcess:
    def __init__(self, side: Side, args: list[str]) -> None:
        self.side, self.args = side, args
        self.proc: subprocess.Popen | None = None
        self.hello: dict = {}

    def launch(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.ab.worker", *self.args],
            cwd=self.side.path,
            env=worker_env(self.side),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the worker's own messages go to the terminal
            text=True,
        )

    def wait_ready(self) -> None:
        self.hello = self._read()
        if "error" in self.hello:
            who = f"the {self.side.label} worker ({self.side.spec})"
            raise PerfSuiteError(f"{who} could not start: {self.hello['error']}")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise PerfSuiteError(f"the {self.side.label} worker ({self.side.spec}) exited (code {self.proc.wait()})")
        return json.loads(line)

    def send(self, cmd: str, **kw) -> None:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()

    def ask(self, cmd: str, **kw) -> dict:
        self.send(cmd, **kw)
        reply = self._read()
        if "error" in reply and cmd != "open":
            raise PerfSuiteError(f"{self.side.label} worker ({self.side.spec}), {cmd}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


@contextmanager
def worker_pair(base: Side, head: Side, args: list[str], head_args: list[str], base_first: bool):
    """[base worker, head worker], launched in the order asked (a fresh pair per pass alternates it, so
    neither side always gets the first-launched process's place in memory) and importing side by side
    (single-threaded work: 5 s for the pair instead of 10 s); both closed on the way out."""
    pair = [WorkerProcess(base, args), WorkerProcess(head, head_args)]
    try:
        for w in pair if base_first else pair[::-1]:
            w.launch()
        for w in pair:
            w.wait_ready()
        yield pair
    finally:
        for w in pair:
            w.close()


def check_both(pair: list[WorkerProcess]) -> None:
    """Both workers' parity probes at once, each on one thread (worker.Worker.check), where both speak
    protocol 3; otherwise neither is asked (one probe alone on one thread gains nothing) and each side
    checks its cases as it opens them. An error here is not the comparison's end: the probe's result is
    not cached then, so the case's own open meets the problem again, and that case alone is left out."""
    if not all(w.hello.get("protocol", 1) >= 3 for w in pair):
        return
    for w in pair:
        w.send("check")
    for w in pair:
        reply = w._read()
        if "error" in reply:
            print(f"{w.side.label} worker ({w.side.spec}), check: {reply['error']}", file=sys.stderr, flush=True)


def open_both(pair: list[WorkerProcess], name: str, head_last: bool = True) -> tuple[list[dict], str]:
    """Open the case on both sides, one after the other (head last unless told otherwise; the runner
    draws it per visit, and the first block starts with the side opened last): two processes building
    at once, each with a thread per core, took 3-5x as long as one after the other (on 2 cores, OpenMP
    threads spin-waiting on each other); where one side cannot run it, close it on the other and say
    why. The replies come in the pair's order, whichever opened first."""
    opened = [{}, {}]
    for i in (0, 1) if head_last else (1, 0):
        opened[i] = pair[i].ask("open", case=name)
    problems = [
        f"{w.side.label}: {o.get('error') or o.get('skip')}"
        for w, o in zip(pair, opened, strict=True)
        if "tokens" not in o
    ]
    if problems:
        for w, o in zip(pair, opened, strict=True):
            if "tokens" in o:
                w.ask("close")
    return opened, "; ".join(problems)
