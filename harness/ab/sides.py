"""The two sides of an A/B comparison: where each side's code lives, and the worker process that runs it.

A side is a folder used as it is, or a git ref checked out into a worktree of its own (removed again
when the comparison ends). Its workers (harness/ab/worker.py), one per sweep, run with that side's
code on their path and answer one JSON line per command on stdin.
"""

from __future__ import annotations

import json
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

from harness.ab.worker import PROTOCOL
from harness.errors import PerfSuiteError


@dataclass
class Side:
    label: str  # "base" or "head"
    spec: str  # what the user gave: a ref, a folder, or "working tree"
    path: Path
    commit: str | None = None

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


PAD = "LLM_PERF_LAYOUT_PAD"  # an environment variable of random length: where the stack starts, drawn anew
PAD_MAX = 4096  # bytes: a page of stack offsets


def worker_env(side: Side, other: Side | None = None, rng: random.Random | None = None) -> dict:
    """This process's environment with the side's own code first on the path. Where the environment
    ends moves the stack, and with it a process's speed by a few percent (Mytkowicz et al. 2009,
    "Producing wrong data without doing anything obviously wrong!"): a side whose folder has a longer
    name is padded to the other's length, and each process then gets a random pad of its own, so the
    layout is a chance each sweep draws again, never a lean of one side (Curtsinger & Berger 2013,
    Stabilizer, randomise layout to make it noise)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", PAD)}
    path = str(side.path)
    longest = max(len(path), len(str(other.path)) if other else 0)
    extra = (rng or random.Random()).randrange(PAD_MAX)
    return {**env, "PYTHONPATH": path, PAD: "x" * (longest - len(path) + extra)}


class WorkerProcess:
    """A side's worker process (harness/ab/worker.py), fresh for each sweep."""

    def __init__(self, side: Side, args: list[str], env: dict | None = None) -> None:
        self.side, self.args, self.env = side, args, env
        self.proc: subprocess.Popen | None = None
        self.hello: dict = {}

    def launch(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.ab.worker", *self.args],
            cwd=self.side.path,
            env=self.env or worker_env(self.side),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the worker's own messages go to the terminal
            text=True,
        )

    def wait_ready(self) -> None:
        self.hello = self.read()
        who = f"the {self.side.label} worker ({self.side.spec})"
        if "error" in self.hello:
            raise PerfSuiteError(f"{who} could not start: {self.hello['error']}")
        if self.hello.get("protocol") != PROTOCOL:
            raise PerfSuiteError(
                f"{who} speaks worker protocol {self.hello.get('protocol')}, this A/B needs {PROTOCOL}: compare "
                "trees of the same suite version (the suite's code on each side is that side's)"
            )

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise PerfSuiteError(f"the {self.side.label} worker ({self.side.spec}) exited (code {self.proc.wait()})")
        return json.loads(line)

    def send(self, cmd: str, **kw) -> None:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()

    def ask(self, cmd: str, **kw) -> dict:
        self.send(cmd, **kw)
        reply = self.read()
        if "error" in reply and cmd != "open":
            raise PerfSuiteError(f"{self.side.label} worker ({self.side.spec}), {cmd}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


@contextmanager
def fresh_pair(base: Side, head: Side, args: list[str], base_first: bool, rng: random.Random):
    """[base, head] worker processes, new for this sweep, launched in the order asked and importing side
    by side (single-threaded work); each with an environment of its own (worker_env). Both quit on the
    way out."""
    pair = [
        WorkerProcess(base, args, worker_env(base, head, rng)),
        WorkerProcess(head, args, worker_env(head, base, rng)),
    ]
    try:
        for w in pair if base_first else pair[::-1]:
            w.launch()
        for w in pair:
            w.wait_ready()
        yield pair
    finally:
        for w in pair:
            w.close()


def ask_both(pair: list[WorkerProcess], cmd: str, **kw) -> list[dict]:
    """The same command to both workers at once (each works on one thread), replies in the pair's order."""
    for w in pair:
        w.send(cmd, **kw)
    replies = [w.read() for w in pair]
    for w, r in zip(pair, replies, strict=True):
        if "error" in r:
            raise PerfSuiteError(f"{w.side.label} worker ({w.side.spec}), {cmd}: {r['error']}")
    return replies


def open_both(pair: list[WorkerProcess], name: str, head_last: bool, check: bool) -> tuple[list[dict], str]:
    """Open the case on both sides, one after the other (two builds at once, each with a thread per core,
    took 3-5x as long on 2 cores); where one side cannot run it, close it on the other and say why. The
    replies come in the pair's order."""
    opened = [{}, {}]
    for i in (0, 1) if head_last else (1, 0):
        opened[i] = pair[i].ask("open", case=name, check=check)
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
