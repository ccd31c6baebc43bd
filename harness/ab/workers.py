"""A side's worker processes (harness/ab/worker.py): started fresh for each sweep, one JSON line per
command and reply on their pipes."""

from __future__ import annotations

import json
import random
import subprocess
from contextlib import contextmanager
from pathlib import Path

from harness.ab.sides import Side, worker_env
from harness.ab.worker import PROTOCOL
from harness.errors import PerfSuiteError


class WorkerProcess:
    """A side's worker process (harness/ab/worker.py), fresh for each sweep."""

    def __init__(self, side: Side, args: list[str], env: dict) -> None:
        self.side, self.args, self.env = side, args, env
        self.proc: subprocess.Popen | None = None
        self.hello: dict = {}

    def launch(self) -> None:
        self.proc = subprocess.Popen(
            [self.side.python, "-m", "harness.ab.worker", *self.args],
            cwd=self.side.path or Path.cwd(),
            env=self.env,
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
def fresh_pair(base: Side, head: Side, suite: Path, args: list[str], base_first: bool, rng: random.Random):
    """[base, head] worker processes, new for this sweep, launched in the order asked and importing side
    by side (single-threaded work); each with an environment of its own (worker_env). Both quit on the
    way out."""
    pair = [
        WorkerProcess(base, args, worker_env(base, head, suite, rng)),
        WorkerProcess(head, args, worker_env(head, base, suite, rng)),
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


def open_both(pair: list[WorkerProcess], name: str, head_last: bool, check: bool) -> tuple[list[dict], str, bool]:
    """Open the case on both sides, one after the other (two builds at once, each with a thread per core,
    took 3-5x as long on 2 cores); where one side cannot run it, close it on the other and say why.
    Returns the replies in the pair's order, the problem, and whether it is a failure (a failed output
    check or an error opening the case) rather than an engine one side does not have."""
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
    return opened, "; ".join(problems), any("error" in o for o in opened)
