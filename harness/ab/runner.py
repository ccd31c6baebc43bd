"""`python -m harness ab BASE [HEAD] [-- pytest args]`: base against head on this machine, interleaved.

Each side runs in a worker process with its own code (a git worktree for a ref, or a folder; HEAD
defaults to the working tree) and the same model seed. For every case both workers build the case
outside any timing, then the orchestrator alternates single rounds between them in ABBA blocks with
a random start, so both sides see the same machine at the same moment; pairs of neighbouring rounds
give log ratios (harness/ab/stats.py). Rounds go on until the interval of the case's change is
narrower than --target (half-width) or the case has used --max-case-s.

Verdicts: a case regresses when its one-sided p (Wilcoxon signed-rank, Holm-adjusted over the cases)
is below alpha AND its change is below -threshold ([tool.perf] ab_threshold, default 2%). A side
without the worker protocol (a ref from before it existed) falls back to whole pytest runs
interleaved ABAB and a paired t-test on the run medians; the output says so.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.ab.stats import PairedEstimate, estimate, run_medians_estimate
from harness.baseline.gate import Verdict, format_table, holm
from harness.errors import EXIT_OK, EXIT_REGRESSION, PerfSuiteError

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


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PerfSuiteError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def resolve_side(label: str, spec: str | None, root: Path, tmp: Path) -> Side:
    """A folder is used as it is; anything else is a git ref checked out into a worktree of its own."""
    if spec is None:
        return Side(label, "working tree", root)
    if Path(spec).is_dir():
        return Side(label, spec, Path(spec).resolve())
    commit = _git(root, "rev-parse", "--verify", f"{spec}^{{commit}}")
    path = tmp / f"{label}-{commit[:12]}"
    _git(root, "worktree", "add", "--detach", str(path), commit)
    return Side(label, spec, path, commit)


class WorkerProcess:
    def __init__(self, side: Side, args: list[str]) -> None:
        self.side, self.args = side, args
        self.proc: subprocess.Popen | None = None
        self.hello: dict = {}

    def start(self) -> None:
        args, side = self.args, self.side
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.ab.worker", *args],
            cwd=side.path,
            env={**_env(), "PYTHONPATH": str(side.path)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the worker's own messages go to the terminal
            text=True,
        )
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise PerfSuiteError(f"the {self.side.label} worker ({self.side.spec}) exited (code {self.proc.wait()})")
        return json.loads(line)

    def ask(self, cmd: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
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


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@dataclass
class CaseRounds:
    name: str
    tokens: float = 0.0  # generated per round (all reps)
    reps: int = 1
    base_s: list[float] = field(default_factory=list)
    head_s: list[float] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # "ABBA" or "BAAB" for each block, in the order run
    pass_changes: list[float] = field(default_factory=list)  # each pass's own estimate (fresh processes)
    note: str = ""


@dataclass(frozen=True)
class Budget:
    target: float = 0.01  # stop when the change's interval half-width is below this
    min_blocks: int = 6
    max_case_s: float = 20.0  # both sides' rounds of one case, at most
    min_round_s: float = 0.1  # a round repeats the case's unit of work until it lasts about this long
    passes: int = 2  # fresh worker pairs per comparison; each pass gets max_case_s / passes of each case


def reps_for(opened: list[dict], budget: Budget) -> int:
    """Units of work per round, the same on both sides: enough that a round lasts min_round_s, from the
    faster side's warm-up. A millisecond decode step alone is mostly the cost of waking up after the
    other process ran (seen: 3 ms and 7 ms rounds of one step, bimodal). A worker of protocol 1 (no
    warm_s) runs one unit per round, and then so does the other side."""
    warm = [o.get("warm_s") for o in opened]
    if any(w is None for w in warm) or budget.min_round_s <= 0:
        return 1
    return max(1, min(1000, math.ceil(budget.min_round_s / max(min(warm), 1e-6))))


def interleave(
    base: WorkerProcess,
    head: WorkerProcess,
    rounds: CaseRounds,
    budget: Budget,
    rng: random.Random,
    first_block: int = 0,
    last: bool = True,
) -> None:
    """ABBA (or BAAB, at random) blocks until the interval is narrow enough or the time is spent.

    A round that follows a round of the same process finds its caches warm; one that follows the other
    process finds them cold. In A B B A, each side has one of each, so a block's two sums compare like
    with like (and a linear drift of the machine cancels too); a lone A-B pair would not. Blocks from
    first_block on are this pass's; the interval that stops early is the pass's own, or, in the last
    pass, that of all passes together."""
    start = time.perf_counter()
    while True:
        order = "ABBA" if rng.random() < 0.5 else "BAAB"
        times = {"A": [], "B": []}
        for who in order:
            times[who].append((base if who == "A" else head).ask("round", reps=rounds.reps)["seconds"])
        rounds.base_s += times["A"]
        rounds.head_s += times["B"]
        rounds.order.append(order)
        if len(rounds.order) - first_block >= budget.min_blocks:
            if estimate(*block_sums(rounds, 0 if last else first_block)).half_width < budget.target:
                return
            if time.perf_counter() - start > budget.max_case_s:
                rounds.note = f"time cap before the interval narrowed to +-{budget.target:.0%}"
                return


def block_sums(rounds: CaseRounds, first_block: int = 0) -> tuple[list[float], list[float]]:
    """Each block's two base rounds and two head rounds, summed: one paired observation per block."""
    pair = range(2 * first_block, len(rounds.base_s), 2)
    return [rounds.base_s[i] + rounds.base_s[i + 1] for i in pair], [
        rounds.head_s[i] + rounds.head_s[i + 1] for i in pair
    ]


def verdicts(
    estimates: dict[str, PairedEstimate], rounds: dict[str, CaseRounds], threshold: float, alpha: float
) -> list[Verdict]:
    names = sorted(estimates)
    slower = holm([estimates[n].p_slower for n in names])
    faster = holm([estimates[n].p_faster for n in names])
    out = []
    for name, p_slow, p_fast in zip(names, slower, faster, strict=True):
        e, r = estimates[name], rounds[name]
        base_tok = r.tokens / sorted(r.base_s)[len(r.base_s) // 2] if r.base_s else None
        head_tok = r.tokens / sorted(r.head_s)[len(r.head_s) // 2] if r.head_s else None
        note = f"{e.pairs} blocks, 95% CI {e.low:+.1%}..{e.high:+.1%}" + (f"; {r.note}" if r.note else "")
        fields = dict(base_tok_s=base_tok, now_tok_s=head_tok, change=e.change, threshold=threshold, note=note)
        if e.change < -threshold and p_slow < alpha:
            out.append(Verdict(name, "regression", p_value=p_slow, **fields))
        elif e.change > threshold and p_fast < alpha:
            out.append(Verdict(name, "improvement", p_value=p_fast, **fields))
        else:
            out.append(Verdict(name, "ok", p_value=min(p_slow, p_fast), **fields))
    return out


@dataclass(frozen=True)
class ABResult:
    lines: list[str]
    exit_code: int
    doc: dict


def open_both(pair: list[WorkerProcess], name: str) -> tuple[list[dict], str]:
    """Open the case on both sides; where one side cannot run it, close it on the other and say why."""
    opened = [w.ask("open", case=name) for w in pair]
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


def compare_interleaved(
    base: Side, head: Side, args: list[str], inject: tuple[float, str], budget: Budget, seed: int
) -> tuple[dict[str, CaseRounds], dict[str, PairedEstimate], list[str]]:
    """Every case, in `budget.passes` passes, each with a fresh pair of worker processes (started in
    alternating order), each pass taking its share of the case's time. A process carries a bias of
    its own that no interleaving cancels (where its weights and buffers landed in memory: seen as a
    steady +2.5% between two processes of the same code); fresh processes turn it into noise that
    averages over the passes."""
    rng = random.Random(seed)
    head_args = [*args, "--ab-inject-slowdown", str(inject[0]), "--ab-inject-case", inject[1]] if inject[0] else args
    passes = max(1, budget.passes)
    share = Budget(
        budget.target, max(2, math.ceil(budget.min_blocks / passes)), budget.max_case_s / passes, budget.min_round_s
    )
    rounds: dict[str, CaseRounds] = {}
    missing: list[str] = []  # what the table lists as not compared
    skipped: set[str] = set()  # cases a side could not run: not opened again
    common: list[str] | None = None
    for n in range(passes):
        pair = [WorkerProcess(base, args), WorkerProcess(head, head_args)]
        workers = pair if n % 2 == 0 else pair[::-1]  # started in this order; [base, head] below
        try:
            for w in workers:
                w.start()
            for w in pair:
                if "error" in w.hello:
                    raise PerfSuiteError(
                        f"the {w.side.label} worker ({w.side.spec}) could not start: {w.hello['error']}"
                    )
            if common is None:
                lists = [w.ask("cases")["cases"] for w in pair]
                common = [c for c in lists[0] if c in set(lists[1])]
                missing += sorted(set(lists[0]) ^ set(lists[1]))
                if not common:
                    raise PerfSuiteError(
                        "base and head have no case in common for these pytest arguments: nothing to compare"
                    )
            else:
                for w in pair:
                    w.ask("cases")
            for name in common:
                if name in skipped:
                    continue
                opened, problem = open_both(pair, name)
                if problem:
                    missing.append(f"{name} ({problem})")
                    skipped.add(name)
                    rounds.pop(name, None)
                    continue
                if name not in rounds:
                    reps = reps_for(opened, budget)
                    rounds[name] = CaseRounds(name, tokens=opened[0]["tokens"] * reps, reps=reps)
                r = rounds[name]
                first_block = len(r.order)
                interleave(pair[0], pair[1], r, share, rng, first_block, last=n == passes - 1)
                for w in pair:
                    w.ask("close")
                e = estimate(*block_sums(r, first_block))
                r.pass_changes.append(e.change)
                print(
                    f"  {name}, pass {n + 1}/{passes}: {e.change:+.2%} ({e.pairs} blocks, +-{e.half_width:.1%})",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            for w in pair:
                w.close()
    estimates = {name: estimate(*block_sums(r)) for name, r in rounds.items()}
    return rounds, estimates, missing


def compare_whole_runs(
    base: Side, head: Side, args: list[str], runs: int
) -> tuple[dict[str, CaseRounds], dict[str, PairedEstimate], list[str]]:
    """ABAB whole pytest runs, for a side without the worker protocol: a paired test on run medians."""
    from harness.baseline.storage import load_results

    medians: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            pair = {}
            for side in (base, head):
                out = Path(tmp) / f"{side.label}-{i}.json"
                rc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pytest",
                        "perf_tests",
                        "-q",
                        "-p",
                        "no:cacheprovider",
                        "--benchmark-json",
                        str(out),
                        *args,
                    ],
                    cwd=side.path,
                    env={**_env(), "PYTHONPATH": str(side.path)},
                ).returncode
                if rc != 0:
                    raise PerfSuiteError(f"pytest perf_tests in the {side.label} ({side.spec}) exited with {rc}")
                pair[side.label] = {b.name: b.median_tok_s for b in load_results(out).benches}
            for name in pair["base"].keys() & pair["head"].keys():
                medians.setdefault(name, []).append((pair["base"][name], pair["head"][name]))
    rounds = {n: CaseRounds(n, note="whole runs ABAB (a side lacks the worker protocol)") for n in medians}
    estimates = {n: run_medians_estimate([b for b, _ in m], [h for _, h in m]) for n, m in medians.items()}
    return rounds, estimates, []


def ab(
    base_spec: str,
    head_spec: str | None,
    pytest_args: list[str],
    inject: tuple[float, str] = (0.0, ""),
    budget: Budget = Budget(),
    runs: int = 3,
    out: str | None = None,
    seed: int | None = None,
    pyproject: str = "pyproject.toml",
) -> ABResult:
    from harness.baseline.gate import Thresholds

    thresholds = Thresholds.from_pyproject(pyproject)
    threshold, alpha = thresholds.ab_threshold, thresholds.alpha
    args = [a for a in pytest_args if a != "--"]
    seed = random.randrange(2**31) if seed is None else seed
    root = Path(_git(Path.cwd(), "rev-parse", "--show-toplevel"))
    tmp = Path(tempfile.mkdtemp(prefix="llm-perf-ab-"))
    sides: list[Side] = []
    try:
        sides = [resolve_side("base", base_spec, root, tmp), resolve_side("head", head_spec, root, tmp)]
        start = time.perf_counter()
        if all(s.has_worker for s in sides):
            method = "interleaved rounds (ABBA, random start), Wilcoxon signed-rank on paired log ratios, Holm"
            rounds, estimates, missing = compare_interleaved(*sides, args, inject, budget, seed)
        else:
            if inject[0]:
                raise PerfSuiteError("--inject-slowdown needs the worker protocol on both sides")
            lacking = ", ".join(f"{s.label} ({s.spec})" for s in sides if not s.has_worker)
            method = (
                f"{lacking} has no worker protocol: {runs} whole runs per side interleaved ABAB, paired t-test "
                f"on run medians, Holm"
            )
            rounds, estimates, missing = compare_whole_runs(*sides, args, runs)
        found = verdicts(estimates, rounds, threshold, alpha)
        found += [Verdict(m, "missing-now", note="not compared") for m in missing]
        lines = [
            f"base {sides[0].spec} ({sides[0].commit or sides[0].path}) vs head {sides[1].spec} "
            f"({sides[1].commit or sides[1].path}); {time.perf_counter() - start:.0f} s",
            *format_table(found, alpha, f"{method}; threshold {threshold:.0%}"),
        ]
        doc = {
            "method": method,
            "seed": seed,
            "base": {"spec": sides[0].spec, "commit": sides[0].commit},
            "head": {"spec": sides[1].spec, "commit": sides[1].commit},
            "inject": {"slowdown": inject[0], "case": inject[1]},
            "threshold": threshold,
            "alpha": alpha,
            "cases": {
                n: {
                    "tokens": r.tokens,
                    "reps": r.reps,
                    "pass_changes": r.pass_changes,
                    "base_s": r.base_s,
                    "head_s": r.head_s,
                    "order": r.order,
                    "note": r.note,
                }
                for n, r in rounds.items()
            },
            "verdicts": [v.__dict__ for v in found],
        }
        if out:
            from harness.baseline.storage import write_json_atomic

            write_json_atomic(Path(out), doc)
        code = EXIT_REGRESSION if any(v.status == "regression" for v in found) else EXIT_OK
        return ABResult(lines, code, doc)
    finally:
        for s in sides:
            if s.commit is not None:
                subprocess.run(
                    ["git", "-C", str(root), "worktree", "remove", "--force", str(s.path)], capture_output=True
                )
        shutil.rmtree(tmp, ignore_errors=True)
