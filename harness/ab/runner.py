"""`llm-perf ab BASE [HEAD] [-- pytest args]`: base against head on this machine, rounds interleaved.

Every sweep starts a fresh pair of worker processes, one per side, each with its side's code
(harness/ab/worker.py), and visits cases one after another: open on both sides (outside any timing),
a few ABBA/BAAB blocks, close. A sweep visits a case at most once, so a case's units, its sweeps, are
independent pairs of processes. The plan (harness/ab/plan.py) fixes how many sweeps and blocks each
case gets before any round is timed; harness/judge decides the verdicts. The first sweep also checks
every engine's parity with HF and every generate kind's outputs; later sweeps run the same code on
the same seed.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.ab.plan import Plan, allocate, reps_for, suspects, sweeps_of
from harness.ab.rounds import CaseRecord, Visit, stage_lean
from harness.ab.sides import Side, checked_out
from harness.ab.workers import WorkerProcess, ask_both, fresh_pair, open_both
from harness.errors import EXIT_CHECK_FAILED, EXIT_GATE_ERROR, PerfSuiteError
from harness.files import write_json_atomic
from harness.judge import TWO_STAGE, Estimate, Thresholds, Verdict, decide, exit_code, missing
from harness.judge.table import format_markdown, format_table

SPENT = ("start", "prepare", "open", "rounds", "close")
AB_KIND = "llm-perf-suite ab"  # what an --out document says it is (llm-perf report reads it)


@dataclass
class Sweeps:
    """What the sweeps of one comparison gather."""

    sides: list[Side]
    args: list[str]
    plan: Plan
    rng: random.Random
    suite: Path = Path(".")  # this suite's code, for environment sides (sides.suite_code)
    launch: Callable = fresh_pair  # (base, head, suite, args, base_first, rng) -> a context giving the pair
    names: list[str] | None = None  # the cases both sides have, from the first sweep
    records: dict[str, CaseRecord] = field(default_factory=dict)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (name, why): cases not compared
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, why): a side failed its check or broke
    stage2_blocks: dict[str, int] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SPENT, 0.0))
    pair: list[WorkerProcess] = field(default_factory=list)

    @contextmanager
    def timing(self, what: str):
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.spent[what] += time.perf_counter() - tick

    def sweep(self, due: Callable[[list[str]], list[str]], stage: int, number: int) -> None:
        """A fresh pair of processes visits the cases `due` picks from those compared, in an order
        drawn anew; the first sweep also lists the cases and checks them."""
        first = self.names is None
        if not first and not due(self.names):
            return
        with ExitStack() as stack:
            with self.timing("start"):
                launched = self.launch(*self.sides, self.suite, self.args, self.rng.random() < 0.5, self.rng)
                self.pair = stack.enter_context(launched)
                if first:
                    self.names, only = common_cases(self.pair)
                    self.missing += only
                else:
                    ask_both(self.pair, "cases")
            with self.timing("prepare"):
                ask_both(self.pair, "prepare", check=first)
            names = due(self.names)
            for name in self.rng.sample(names, len(names)):
                self.visit(name, stage, number)
            with self.timing("close"):
                stack.close()
        _progress(f"stage {stage}, sweep {number + 1}: {len(names)} case(s)")

    def visit(self, name: str, stage: int, number: int) -> None:
        head_last = self.rng.random() < 0.5  # the side opened last leads the blocks
        record = self.records.get(name)
        with self.timing("open"):
            opened, problem, failed = open_both(self.pair, name, head_last, check=record is None)
        if not problem and record is None and opened[0]["tokens"] != opened[1]["tokens"]:
            problem = f"the sides produce different work ({opened[0]['tokens']} vs {opened[1]['tokens']} tokens)"
            with self.timing("close"):
                for w in self.pair:
                    w.ask("close")
        if problem:
            (self.failed if failed else self.missing).append((name, problem))
            self.records.pop(name, None)
            return
        record = record or self.first_open(name, opened)
        record.count_work(opened)
        if record.reps > 1:  # a fresh process's first round of a short unit is not yet a steady one
            with self.timing("open"):
                for w in self.pair if head_last else self.pair[::-1]:  # the leading side last, as it opened
                    w.ask("round", reps=record.reps)
        visit = Visit(stage, number, "B" if head_last else "A")
        with self.timing("rounds"):
            run_blocks(
                self.pair, visit, record.blocks_per_visit if stage == 1 else self.stage2_blocks[name], record.reps
            )
        record.visits.append(visit)
        # the first visit's close counts the case's flops on each side; the second's again where they differ
        count = len(record.visits) == 1 or (len(record.visits) == 2 and record.flops_differ())
        with self.timing("close"):
            closed = [w.ask("close", count=count) for w in self.pair]
        if count:
            record.add_flops(closed)

    def first_open(self, name: str, opened: list[dict]) -> CaseRecord:
        """The case's stage-1 allocation, from both sides' warm-up units (plan.allocate)."""
        warm = [o["warm_s"] for o in opened]
        reps = reps_for(warm, self.plan.round_s)
        visits, blocks = allocate(4 * reps * min(warm), self.plan.case_s, self.plan.sweeps)
        record = CaseRecord(name, opened[0]["tokens"] * reps, reps, visits, blocks)
        self.records[name] = record
        return record


def run_blocks(pair: list[WorkerProcess], visit: Visit, blocks: int, reps: int) -> None:
    """`blocks` blocks led by the visit's lead ("A": ABBA, "B": BAAB), their rounds added to the visit."""
    order = "ABBA" if visit.lead == "A" else "BAAB"
    for _ in range(blocks):
        for who in order:
            seconds = (pair[0] if who == "A" else pair[1]).ask("round", reps=reps)["seconds"]
            (visit.base_s if who == "A" else visit.head_s).append(seconds)


def common_cases(pair: list[WorkerProcess]) -> tuple[list[str], list[tuple[str, str]]]:
    """(the cases both sides have, in base's order; (case, which side has it) for those only one has)."""
    lists = [r["cases"] for r in ask_both(pair, "cases")]
    common = [c for c in lists[0] if c in set(lists[1])]
    only = [(c, "base only") for c in lists[0] if c not in set(lists[1])]
    only += [(c, "head only") for c in lists[1] if c not in set(lists[0])]
    if not common:
        raise PerfSuiteError("base and head have no case in common for these pytest arguments: nothing to compare")
    return common, only


def stage1(run: Sweeps) -> None:
    """Every case in the first sweep; after it, each in the sweeps its allocation spreads it over."""
    for number in range(run.plan.sweeps):
        run.sweep(
            lambda names, n=number: [
                c
                for c in names
                if n == 0 or (c in run.records and n in sweeps_of(run.records[c].visits_planned, run.plan.sweeps))
            ],
            1,
            number,
        )


def stage2(run: Sweeps, threshold: float) -> list[str]:
    """Stage 2's suspects and their visits (plan.suspects: decided on stage 1's data alone)."""
    plan = run.plan
    lean = stage_lean(list(run.records.values()), 1)
    chosen = suspects({n: r.test(lean, 1) for n, r in run.records.items()}, threshold, plan.suspects)
    if not chosen or plan.stage2_s <= 0:
        return []
    planned = {}
    for name in chosen:
        planned[name], run.stage2_blocks[name] = allocate(
            run.records[name].block_s(), plan.stage2_s / len(chosen), plan.stage2_sweeps
        )
    for number in range(plan.stage2_sweeps):
        run.sweep(
            lambda names, n=number: [
                c for c in chosen if c in run.records and n in sweeps_of(planned[c], plan.stage2_sweeps)
            ],
            2,
            number,
        )
    return chosen


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def estimate(record: CaseRecord, threshold: float, leans: dict) -> Estimate:
    """The case's row for the judge: stage 1's test, stage 2's where it ran, all visits for the interval;
    `leans`: the lean pooled over the cases of each stage (1, 2) and of both (None)."""
    two = 2 in record.stages()
    visits = [sum(v.stage == s for v in record.visits) for s in (1, 2)]
    note = f"{visits[0]} visit(s) of {record.blocks_per_visit} block(s)"
    note += f" + {visits[1]} in stage 2" if two else ""
    return Estimate(
        record.name,
        record.test(leans[1], 1),
        threshold,
        base=record.tok_s("base"),
        now=record.tok_s("head"),
        stage2=record.test(leans[2], 2) if two else None,
        pooled=record.test(leans[None]) if two else None,
        note=note + (f"; {record.note}" if record.note else ""),
    )


def method_line(plan: Plan, thresholds: Thresholds) -> str:
    return (
        f"interleaved ABBA/BAAB blocks; each sweep a fresh pair of processes, visiting a case at most once; per "
        f"case a nested t-test: pairs of rounds within visits (their order removed), the visits' lean pooled "
        f"over the cases, Satterthwaite's df. Stage 1: {plan.sweeps} sweeps, {plan.case_s:g} s of rounds a case, "
        f"alone at alpha/2 (Bonferroni over the cases). Stage 2: up to "
        f"{plan.suspects} suspects (leaning slower, interval beyond the threshold), {plan.stage2_sweeps} sweeps, "
        f"{plan.stage2_s:g} s, judged on its own sweeps and combined with stage 1 by the inverse normal method, "
        f"equal weights (closed test, Bonferroni). Family-wise error {thresholds.alpha} each way; threshold "
        f"{thresholds.ab_threshold:.0%}"
    )


@dataclass(frozen=True)
class ABResult:
    lines: list[str]
    exit_code: int
    doc: dict
    verdicts: list[Verdict]
    method: str

    def markdown(self) -> str:
        title = f"llm-perf ab: {self.doc['head']} against {self.doc['base']}"
        failed = "; ".join(f"`{name}`: {why}" for name, why in (self.doc.get("failed") or {}).items())
        lead = f"**FAILED** (a side's output check): {failed}" if failed else ""
        return format_markdown(self.verdicts, self.method, title, lead)


def run_comparison(run: Sweeps, thresholds: Thresholds) -> list[str]:
    """Both stages: fills `run`; returns stage 2's suspects."""
    stage1(run)
    return stage2(run, thresholds.ab_threshold)


def verdicts_of(run: Sweeps, thresholds: Thresholds) -> list[Verdict]:
    """Every compared case's verdict (the two-stage rule), then the cases not compared."""
    records = list(run.records.values())
    leans = {stage: stage_lean(records, stage) for stage in (1, 2, None)}
    rows = [estimate(r, thresholds.ab_threshold, leans) for r in records]
    work = [v for r in run.records.values() for v in r.work_rows()]
    gone = [missing(n, f"not compared: {why}") for n, why in run.missing]
    gone += [missing(n, f"FAILED: {why}") for n, why in run.failed]
    return decide(rows, thresholds.alpha, TWO_STAGE) + work + gone


def ab_exit_code(run: Sweeps, verdicts: list[Verdict], strict: bool) -> int:
    """A side that failed a case's output check (or broke opening it) fails the comparison, whatever the
    timings say; so does a comparison that compared no case; else the verdicts' exit code."""
    if run.failed:
        return EXIT_CHECK_FAILED
    if not run.records:
        return EXIT_GATE_ERROR
    return exit_code(verdicts, strict)


def ab(
    base_spec: str | None,
    head_spec: str | None,
    pytest_args: list[str],
    plan: Plan | None = None,
    out: str | None = None,
    seed: int | None = None,
    thresholds: Thresholds | None = None,
    envs: tuple[tuple, tuple] = ((None, None), (None, None)),
) -> ABResult:
    """Compare base and head (refs, folders, or envs: (python, first folder) per side) on these pytest
    arguments; `out` keeps every round and the verdicts."""
    thresholds = thresholds or Thresholds.from_pyproject()
    plan = plan or Plan()
    args = [a for a in pytest_args if a != "--"]
    seed = random.randrange(2**31) if seed is None else seed
    start = time.perf_counter()
    with checked_out(base_spec, head_spec, *envs) as (sides, suite):
        run = Sweeps(sides, args, plan, random.Random(seed), suite)
        chosen = run_comparison(run, thresholds)
        described = [s.describe() for s in sides]
    found = verdicts_of(run, thresholds)
    method = method_line(plan, thresholds)
    spent = ", ".join(f"{k} {v:.0f} s" for k, v in run.spent.items())
    head = f"base {described[0]} vs head {described[1]}; {time.perf_counter() - start:.0f} s ({spent})"
    doc = {
        "kind": AB_KIND,
        "method": method,
        "seed": seed,
        "plan": plan.__dict__,
        "base": described[0],
        "head": described[1],
        "threshold": thresholds.ab_threshold,
        "alpha": thresholds.alpha,
        "stage2": chosen,
        "cases": {n: r.to_dict() for n, r in run.records.items()},
        "verdicts": [v.__dict__ for v in found],
        "failed": dict(run.failed),
        "spent_s": run.spent,
    }
    if out:
        write_json_atomic(Path(out), doc)
    failures = [f"FAILED {name}: {why}" for name, why in run.failed]
    code = ab_exit_code(run, found, thresholds.strict)
    return ABResult([head, *failures, *format_table(found, method)], code, doc, found, method)
