"""`python -m harness ab BASE [HEAD] [-- pytest args]`: base against head on this machine, interleaved.

Each side runs in a worker process with its own code (a git worktree for a ref, or a folder; HEAD
defaults to the working tree) and the same model seed. For every case both workers build the case
outside any timing (in an order drawn per visit), then the orchestrator alternates single rounds
between them in ABBA or BAAB blocks led by the side that opened last, so both sides see the same
machine at the same moment, each with one round after its own process and one after the other's in
every block; pairs of neighbouring rounds give log ratios (harness/ab/stats.py). Rounds go on until
the interval of the case's change is narrower than --target (half-width) or the case has used
--max-case-s, in passes (a fresh pair of workers each) and, within a pass, in visits to the cases in
turn (Comparison.run_pass).

Verdicts: a case regresses when its one-sided p (Wilcoxon signed-rank, Holm-adjusted over the cases)
is below alpha AND its change is below -threshold ([tool.perf] ab_threshold, default 2%). A side
without the worker protocol (a ref from before it existed) falls back to whole pytest runs
interleaved ABAB and a paired t-test on the run medians; the output says so.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.ab.rounds import (
    MIN_INTERVAL_BLOCKS,
    Budget,
    CaseRounds,
    case_estimate,
    interleave,
    reps_for,
    run_blocks,
)
from harness.ab.sides import Side, WorkerProcess, check_both, checked_out, open_both, worker_pair
from harness.ab.stats import PairedEstimate, blocks_for, smallest_p, testable
from harness.baseline.gate import Verdict, format_table
from harness.baseline.significance import holm
from harness.errors import EXIT_OK, EXIT_REGRESSION, PerfSuiteError

INTERLEAVED = (
    "interleaved rounds (ABBA/BAAB led by the side that ran last), Wilcoxon signed-rank on log ratios "
    "widened by the design effect of visits and (from 3 on) worker pairs, Holm"
)


def verdicts(
    estimates: dict[str, PairedEstimate], rounds: dict[str, CaseRounds], threshold: float, alpha: float
) -> list[Verdict]:
    """Holm over the cases that can be significant at all (stats.testable); a case with too few blocks
    for that is "unreliable", its change shown, never a regression."""
    names = sorted(estimates)
    few_visits = {n for n in names if (estimates[n].visits or MIN_VISITS) < MIN_VISITS}
    family = dict(
        zip(names, testable([0 if n in few_visits else estimates[n].pairs for n in names], alpha), strict=True)
    )
    tested = [n for n in names if family[n]]
    slower = dict(zip(tested, holm([estimates[n].p_slower for n in tested]), strict=True))
    faster = dict(zip(tested, holm([estimates[n].p_faster for n in tested]), strict=True))
    out = []
    for name in names:
        e, r = estimates[name], rounds[name]
        base_tok = r.tokens / sorted(r.base_s)[len(r.base_s) // 2] if r.base_s else None
        head_tok = r.tokens / sorted(r.head_s)[len(r.head_s) // 2] if r.head_s else None
        lean = f", visits lean: variance x{e.design_effect:.1f}" if e.design_effect >= 1.05 else ""
        note = f"{e.pairs} blocks{lean}, 95% CI {e.low:+.1%}..{e.high:+.1%}" + (f"; {r.note}" if r.note else "")
        fields = dict(base_tok_s=base_tok, now_tok_s=head_tok, change=e.change, threshold=threshold, note=note)
        if name in few_visits:
            few = f"{e.visits} visit(s): too few to tell an opening's lean from a change; more --max-case-s"
            out.append(Verdict(name, "unreliable", **{**fields, "note": f"{note}; {few}"}))
        elif not family[name]:
            few = f"too few blocks to be significant (p >= {smallest_p(e.pairs):.2g}); more --max-case-s"
            out.append(Verdict(name, "unreliable", **{**fields, "note": f"{note}; {few}"}))
        elif e.change < -threshold and slower[name] < alpha:
            out.append(Verdict(name, "regression", p_value=slower[name], **fields))
        elif e.change > threshold and faster[name] < alpha:
            out.append(Verdict(name, "improvement", p_value=faster[name], **fields))
        else:
            out.append(Verdict(name, "ok", p_value=min(slower[name], faster[name]), **fields))
    return out


def table_verdicts(
    estimates: dict[str, PairedEstimate],
    rounds: dict[str, CaseRounds],
    untimed: dict[str, str],
    missing: list[str],
    threshold: float,
    alpha: float,
) -> list[Verdict]:
    """Every row of the table: the timed cases' verdicts, then the cases opened but not timed
    (unreliable, with the time they would need), then those not compared (and why)."""
    found = verdicts(estimates, rounds, threshold, alpha)
    found += [Verdict(n, "unreliable", note=why) for n, why in sorted(untimed.items())]
    return found + [Verdict(m, "missing-now", note="not compared") for m in missing]


@dataclass(frozen=True)
class ABResult:
    lines: list[str]
    exit_code: int
    doc: dict


SPENT = ("start", "check", "open", "rounds", "close")  # worker starts, parity probes, opens, rounds, closes


@dataclass
class Comparison:
    """What the passes of one A/B comparison gather."""

    budget: Budget
    rng: random.Random
    rounds: dict[str, CaseRounds]
    missing: list[str]  # what the table lists as not compared, and why
    skipped: set[str]  # cases a side could not run: not opened again
    common: list[str] | None = None  # the cases both sides have, from the first pass
    alpha: float = 0.01
    untimed: dict[str, str] = field(default_factory=dict)  # cases opened (and checked) but never timed: why
    spent: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SPENT, 0.0))  # seconds, by what

    def cases(self, pair: list[WorkerProcess]) -> list[str]:
        """The cases to run: both sides' lists, read in every pass (a worker collects them on asking)."""
        lists = [w.ask("cases")["cases"] for w in pair]
        if self.common is None:
            self.common = [c for c in lists[0] if c in set(lists[1])]
            self.missing += sorted(set(lists[0]) ^ set(lists[1]))
            if not self.common:
                raise PerfSuiteError(
                    "base and head have no case in common for these pytest arguments: nothing to compare"
                )
        return [c for c in self.common if c not in self.skipped]

    @contextmanager
    def timing(self, what: str):
        """Adds the time the block takes to spent[what]."""
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.spent[what] += time.perf_counter() - tick

    def floor(self, names: list[str]) -> int:
        """The blocks a case needs before it can be significant at all among the cases still compared
        (Tarone's family, stats.testable: 2^-n <= alpha / their number; 11 blocks for 11 cases at
        0.01), and at least MIN_INTERVAL_BLOCKS."""
        compared = len([c for c in (self.common or names) if c not in self.untimed and c not in self.skipped])
        return max(MIN_INTERVAL_BLOCKS, blocks_for(self.alpha / max(compared, 1)))

    def hopeless(self, opened: list[dict], reps: int, floor: int) -> str:
        """Why a case is not worth timing ("" when it is): its passes give it fewer than MIN_VISITS
        openings (visits_for), or the blocks they can run do not reach the blocks it needs to be
        significant at all (floor). A pass runs its share of --max-case-s and overruns it by at most
        one block; the block's length is judged from the faster side's warm-up unit (the first after
        building on the CPU, an overestimate, so the slower side's would be more so; on CUDA the
        second). Such a case always ended "unreliable" (the quick tier's serving case at 10 s a case: 14 s blocks,
        28.7-54.6 s of rounds a trial, its change read anywhere from -10% to +14% in A/A); its time is
        left to the cases that can decide. Its outputs were still checked when it was opened. A
        follow-up is not counted: it is for a case in doubt after its passes, not for one whose
        budget is too short."""
        warm = [o.get("warm_s") for o in opened]
        if any(w is None for w in warm):
            return ""
        block_s = 4 * reps * max(min(warm), 1e-9)
        passes = max(1, self.budget.passes)
        reachable = passes * math.ceil(self.budget.max_case_s / passes / block_s)
        visits = passes * visits_for(block_s, Budget(max_case_s=self.budget.max_case_s / passes))
        if visits < MIN_VISITS:
            return (
                f"not timed: a verdict needs {MIN_VISITS} openings; ~{block_s:.1f} s blocks give {visits} in "
                f"--max-case-s {self.budget.max_case_s:g} (about "
                f"{passes * math.ceil(MIN_VISITS / passes) * VISIT_BLOCKS * block_s:.0f} s would do)"
            )
        if reachable >= floor:
            return ""
        return (
            f"not timed: significance needs {floor} blocks; ~{block_s:.1f} s blocks give {reachable} in "
            f"--max-case-s {self.budget.max_case_s:g} (about {floor * block_s:.0f} s would do)"
        )

    def run_pass(self, pair: list[WorkerProcess], names: list[str], share: Budget, n: int) -> None:
        """One pass over the cases, with one pair of workers: each case's share of rounds is taken in up
        to MAX_VISITS visits (opened, a few blocks, closed), the cases visited in turn, so one case's
        blocks come from moments spread over the pass instead of a few seconds in a row. Stretches of
        8 blocks of one case, each in one opening in one pair of processes, leaned 2.5-3% beyond their
        blocks' own noise in one of two runs (a phase of the host, or where that opening's buffers
        landed), while fresh pairs added nothing measurable (README, "A/B on one machine"): blocks
        that lean together are what a test counting them as independent calls a change.

        A case alone (a follow-up of one suspect) is visited as often: with nothing between its
        visits, each still opens the case again, and an opening's lean is drawn anew (a follow-up of
        29 blocks in one opening counts, by its design effect, as little more than one visit).

        Each visit gets what is left of the case's share (its rounds' seconds) over the visits left, so
        the pass's rounds overrun the share by about one block, not one per visit; the interval may
        stop a case early only once the pass has run share.min_blocks of its blocks, and only on an
        interval of enough blocks that the case can be significant at all (Comparison.floor: 11 blocks
        for 11 cases at 0.01). Stopped earlier, a narrow case was left "unreliable" (seen: a
        prefill case settled at 9 blocks, +-0.9%): a narrow drop would never be a regression."""
        plan: dict[str, _Visits] = {}
        last = n >= self.budget.passes - 1
        for visit in range(MAX_VISITS):
            for name in names:
                v = plan.get(name)
                if name in self.skipped or (v is None and visit) or (v is not None and not v.more()):
                    continue
                head_last = self.rng.random() < 0.5  # the side opened last leads the visit's blocks
                with self.timing("open"):
                    opened, problem = open_both(pair, name, head_last)
                if problem:
                    self.missing.append(f"{name} ({problem})")
                    self.skipped.add(name)
                    self.rounds.pop(name, None)
                    plan.pop(name, None)
                    continue
                if name not in self.rounds:
                    reps = reps_for(opened, self.budget)
                    self.rounds[name] = CaseRounds(name, tokens=opened[0]["tokens"] * reps, reps=reps)
                r = self.rounds[name]
                if v is None:
                    hopeless = "" if r.order else self.hopeless(opened, r.reps, self.floor(names))
                    if hopeless:
                        self.untimed[name] = hopeless
                        self.skipped.add(name)
                        del self.rounds[name]
                        with self.timing("close"):
                            for w in pair:
                                w.ask("close")
                        continue
                    block_s = block_seconds(opened, r)
                    planned = visits_for(block_s, share)
                    v = plan[name] = _Visits(planned, len(r.order), fitting_blocks(block_s, share))
                part = v.next_part(share, r)
                before, before_t = r.seconds, time.perf_counter()
                v.settled = interleave(
                    pair[0],
                    pair[1],
                    r,
                    part,
                    self.rng,
                    v.first,
                    last,
                    v.pass_min,
                    self.floor(names),
                    lead="B" if head_last else "A",
                )
                v.used_s += r.seconds - before
                r.visit_blocks.append(len(r.order) - sum(r.visit_blocks))
                v.done += 1
                tick = time.perf_counter()
                self.spent["rounds"] += tick - before_t
                for w in pair:
                    w.ask("close")
                self.spent["close"] += time.perf_counter() - tick
        passes = self.budget.passes
        label = f"pass {n + 1}/{passes}" if n < passes else f"follow-up {n + 1 - passes}"
        for name, v in plan.items():
            r = self.rounds[name]
            if not v.settled:
                r.note = f"time cap before the interval narrowed to +-{self.budget.target:.0%}"
            e = case_estimate(r, v.first)
            r.pass_changes.append(e.change)
            r.pass_blocks.append(e.pairs)
            print(
                f"  {name}, {label}: {e.change:+.2%} ({e.pairs} blocks in {v.done} visit(s), +-{e.half_width:.1%}"
                f"{f', variance x{e.design_effect:.1f}' if e.design_effect >= 1.05 else ''})",
                file=sys.stderr,
                flush=True,
            )

    def follow_up(
        self, pair: list[WorkerProcess], suspects: list[str], seconds: float, threshold: float, n: int, part: int = 0
    ) -> list[str]:
        """A follow-up pass: visits of visit_blocks blocks (each a fresh opening) to the suspects, each
        visit to the one whose p (head slower, all its blocks) is smallest now, until `seconds` of rounds
        are spent. A suspect is let go once it leans faster or its interval rules out a drop beyond the
        threshold: it can then no longer be a regression, and stopping there can only make a false call
        rarer. No suspect is let go for being significant: stopping on a low p would call a wandering
        unchanged case. Why many short visits: the lean of an opening (sd about 4% of a decode step's
        ratio on this host, against 9% for one block) is redrawn only by opening again, and opening a
        case a worker has built before costs about 0.1 s a side; a pass's share of 10 s gave a decode
        case 8 visits, an interval of about +-5%, while a 5% drop needs about +-2%. Returns the
        suspects not let go (a later follow-up pass goes on with them: it must not drop one for having
        become significant either). The estimates between visits are counted as rounds' time."""
        active = {name: case_estimate(self.rounds[name]) for name in suspects if name in self.rounds}
        first = {name: len(self.rounds[name].order) for name in active}
        visits = dict.fromkeys(active, 0)
        used = 0.0
        while active and used < seconds and sum(visits.values()) < MAX_FOLLOW_UP_VISITS:
            name = min(active, key=lambda c: active[c].p_slower)
            r = self.rounds[name]
            block_s = max(r.seconds / max(len(r.order), 1), 1e-6)
            head_last = self.rng.random() < 0.5
            with self.timing("open"):
                _, problem = open_both(pair, name, head_last)
            if problem:
                r.note = "; ".join(filter(None, [r.note, f"follow-up stopped: {problem}"]))
                del active[name]
                continue
            before = r.seconds
            with self.timing("rounds"):
                run_blocks(pair[0], pair[1], r, visit_blocks(block_s, seconds - used), "B" if head_last else "A")
            r.visit_blocks.append(len(r.order) - sum(r.visit_blocks))
            with self.timing("close"):
                for w in pair:
                    w.ask("close")
            used += r.seconds - before
            visits[name] += 1
            with self.timing("rounds"):
                e = active[name] = case_estimate(r)
            if e.change >= 0 or e.low >= -threshold:
                del active[name]
        for name in first:
            r = self.rounds[name]
            if not visits[name]:
                continue  # its open failed, or the seconds went to likelier ones
            e = case_estimate(r, first[name])
            r.pass_changes.append(e.change)
            r.pass_blocks.append(e.pairs)
            r.note = "; ".join(filter(None, [r.note, f"followed up: {visits[name]} visit(s)"]))
            print(
                f"  {name}, follow-up {n + 1 - self.budget.passes}.{part + 1}: {e.change:+.2%} ({e.pairs} blocks in "
                f"{visits[name]} visit(s)); all blocks: {case_estimate(r).change:+.2%}",
                file=sys.stderr,
                flush=True,
            )
        return list(active)


@dataclass
class _Visits:
    """One case's visits in one pass."""

    planned: int
    first: int  # the case's first block of this pass
    pass_min: int  # blocks this pass runs at least (fitting_blocks)
    done: int = 0
    used_s: float = 0.0  # its rounds' seconds in this pass, both sides
    settled: bool = False  # its interval narrowed: no more visits

    def more(self) -> bool:
        return not self.settled and self.done < self.planned

    def next_part(self, share: Budget, r: CaseRounds) -> Budget:
        """The next visit's budget: what is left of the share's blocks and seconds, over the visits left."""
        left = self.planned - self.done
        need = max(self.pass_min - (len(r.order) - self.first), 1)
        return Budget(share.target, math.ceil(need / left), (share.max_case_s - self.used_s) / left)


FOLLOW_UP_PAIRS = 3  # a follow-up pass's seconds are spread over this many fresh pairs of workers, one after another
MIN_VISIT_S = 0.5  # a follow-up visit runs at least this long (both sides' rounds): short blocks, more of them
MAX_FOLLOW_UP_VISITS = 200  # visits per follow-up pass, at most: each costs an open of both sides and an estimate


def visit_blocks(block_s: float, left_s: float) -> int:
    """Blocks in one follow-up visit: VISIT_BLOCKS, or as many as make MIN_VISIT_S of rounds where
    blocks are short (a worker of protocol 1 runs one 30 ms unit a round: 80 s would be a thousand
    visits, each re-estimating all its blocks); one where the seconds left hold no more than one."""
    if block_s >= left_s:
        return 1
    return max(VISIT_BLOCKS, math.ceil(MIN_VISIT_S / block_s))


MIN_VISITS = 3  # a case judged on fewer openings is "unreliable": their lean cannot be read (stats.design_effect)
MAX_VISITS = 4  # visits per case and pass, at most: each re-opens the case (a warm-up unit of work)
VISIT_BLOCKS = 2  # a case gets as many visits as its pass share holds this many blocks, up to MAX_VISITS


def block_seconds(opened: list[dict], r: CaseRounds) -> float | None:
    """A block's length: from the blocks the case ran before (an earlier pass), else from the opens'
    warm-up units (the first after building, so an overestimate; on CUDA the second), else None (a
    worker of protocol 1)."""
    if r.order:
        return r.seconds / len(r.order)
    warm = [o.get("warm_s") for o in opened]
    return None if any(w is None for w in warm) else 4 * r.reps * max(max(warm), 1e-6)


def fitting_blocks(block_s: float | None, share: Budget) -> int:
    """The blocks a pass runs at least: share.min_blocks, or as many as fit in the share where fewer
    do, and at least one. --max-case-s caps a case whose blocks are long: the quick tier's serving
    case (10 s blocks) ran 2 a pass, 55 s of rounds a trial against its 10 s, and at 4 blocks it can
    never be significant anyway; it now runs one a pass and shows as unreliable, asking for more time."""
    if block_s is None:
        return share.min_blocks
    return max(1, min(share.min_blocks, int(share.max_case_s / max(block_s, 1e-9))))


def visits_for(block_s: float | None, share: Budget) -> int:
    """How many visits a case's share of a pass is split into: one for a case whose blocks are long (a
    serving block of 10 s gets its share in one go), up to MAX_VISITS for a decode step of milliseconds;
    one where the block's length is unknown."""
    if block_s is None:
        return 1
    return max(1, min(MAX_VISITS, int(share.max_case_s / (VISIT_BLOCKS * max(block_s, 1e-6)))))


MAX_SUSPECTS = 3  # cases a follow-up pass looks at, the likeliest regressions first


def undecided_regressions(
    estimates: dict[str, PairedEstimate],
    rounds: dict[str, CaseRounds],
    threshold: float,
    alpha: float,
    follow_up_s: float = math.inf,
) -> list[str]:
    """The follow-up's suspects, smallest p (head slower) first, at most MAX_SUSPECTS: cases not yet
    decided that lean slower and whose interval still reaches a drop beyond the threshold. A 5%
    slowdown of one case read anywhere from -0.8% to -9.5% after the passes on this 2-core host (the
    lean of each opening, sd about 4% for a decode step, is most of a pass's error), so a suspect must
    not need to read beyond -threshold already: 2 of 17 slowed trials read above -2%. A case with too
    few blocks now is a suspect only when the blocks follow_up_s adds (at its own pace) let it reach
    alpha / (the number of cases): a serving case of 10-second blocks, at 4 blocks, is not."""
    out = []
    for v in verdicts(estimates, rounds, threshold, alpha):
        e = estimates[v.name]
        if v.status not in ("ok", "unreliable") or e.change >= 0 or e.low >= -threshold:
            continue
        r = rounds[v.name]
        added = follow_up_s / max(r.seconds / max(len(r.order), 1), 1e-9)
        if v.status == "ok" or smallest_p(int(len(r.order) + added)) <= alpha / len(estimates):
            out.append(v.name)
    return sorted(out, key=lambda n: estimates[n].p_slower)[:MAX_SUSPECTS]


def checked_once(args: list[str], head_args: list[str], n: int) -> tuple[list[str], list[str]]:
    """The first pass's workers check every case's outputs against HF greedy (the probe, then the warm-up
    round) before a round is timed; later passes and follow-ups run the same code on the same seed, so
    they skip that check (--no-parity) and its cost (about 12 s of each worker's start on the quick tier)."""
    if n == 0:
        return args, head_args
    return [*args, "--no-parity"], [*head_args, "--no-parity"]


def compare_interleaved(
    base: Side,
    head: Side,
    args: list[str],
    inject: tuple[float, str],
    budget: Budget,
    seed: int,
    decide: tuple[float, float] = (0.02, 0.01),
) -> tuple[Comparison, dict[str, PairedEstimate]]:
    """Every case, in `budget.passes` passes, each with a fresh pair of worker processes (started in
    alternating order), each pass taking its share of the case's time in visits spread over the pass
    (Comparison.run_pass). Fresh processes guard against a bias of one process (where its memory
    landed); measured here, pairs differed no more than their blocks' noise explains, while stretches
    of one case in the same pair did: the visits are for that.

    Then up to `budget.follow_up` follow-up passes, again with fresh workers, for the undecided cases
    that lean slower with an interval reaching a drop beyond the threshold (undecided_regressions;
    decide = (threshold, alpha)): each pass spends follow_up_seconds / follow_up of rounds on them in
    short visits (Comparison.follow_up). A 5% slowdown of one case on this 2-core host read -0.8% to
    -9.5% after the passes alone (17 trials), and was called in 9; the verdict is taken on all of a
    case's blocks. Looking again only where a case leans to a regression raises the false-alarm rate
    of that case a little (two looks instead of one), which the A/A experiment measures."""
    head_args = [*args, "--ab-inject-slowdown", str(inject[0]), "--ab-inject-case", inject[1]] if inject[0] else args
    budget = dataclasses.replace(budget, passes=max(1, budget.passes))
    share = Budget(
        budget.target,
        max(2, math.ceil(budget.min_blocks / budget.passes)),
        budget.max_case_s / budget.passes,
        budget.min_round_s,
    )
    run = Comparison(budget, random.Random(seed), {}, [], set(), alpha=decide[1])
    for n in range(budget.passes):
        tick = time.perf_counter()
        with worker_pair(base, head, *checked_once(args, head_args, n), base_first=n % 2 == 0) as pair:
            names = run.cases(pair)
            run.spent["start"] += time.perf_counter() - tick
            if n == 0:
                tick = time.perf_counter()
                check_both(pair)
                run.spent["check"] += time.perf_counter() - tick
            run.run_pass(pair, names, share, n)
    estimates = {name: case_estimate(r) for name, r in run.rounds.items()}
    seconds = budget.follow_up_seconds / max(budget.follow_up, 1)
    going_on: list[str] = []  # suspects of the follow-up before that it did not let go
    for n in range(budget.passes, budget.passes + budget.follow_up if seconds > 0 else budget.passes):
        new = undecided_regressions(estimates, run.rounds, *decide, follow_up_s=seconds)
        suspects = sorted(set(going_on) | set(new), key=lambda c: estimates[c].p_slower)[:MAX_SUSPECTS]
        if not suspects:
            break
        for part in range(FOLLOW_UP_PAIRS):
            tick = time.perf_counter()
            with worker_pair(base, head, *checked_once(args, head_args, n), base_first=(n + part) % 2 == 0) as pair:
                run.cases(pair)
                run.spent["start"] += time.perf_counter() - tick
                going_on = run.follow_up(pair, suspects, seconds / FOLLOW_UP_PAIRS, decide[0], n, part)
            suspects = going_on
            if not suspects:
                break
        estimates = {name: case_estimate(r) for name, r in run.rounds.items()}
    return run, estimates


def _doc(method: str, seed: int, sides: list[Side], inject, thresholds, rounds, found, spent) -> dict:
    """Everything --out keeps: both sides' rounds, in the order run, and the verdicts."""
    keep = ("tokens", "reps", "pass_changes", "pass_blocks", "visit_blocks", "base_s", "head_s", "order", "note")
    return {
        "method": method,
        "seed": seed,
        "base": {"spec": sides[0].spec, "commit": sides[0].commit},
        "head": {"spec": sides[1].spec, "commit": sides[1].commit},
        "inject": {"slowdown": inject[0], "case": inject[1]},
        "threshold": thresholds.ab_threshold,
        "alpha": thresholds.alpha,
        "cases": {n: {k: getattr(r, k) for k in keep} for n, r in rounds.items()},
        "verdicts": [v.__dict__ for v in found],
        "spent_s": spent,  # where the comparison's time went, in seconds (SPENT)
    }


def _run(sides: list[Side], args, inject, budget, runs, seed, decide):
    """(method, rounds, estimates, missing, untimed, spent): interleaved rounds where both sides have the
    worker."""
    if all(s.has_worker for s in sides):
        run, estimates = compare_interleaved(*sides, args, inject, budget, seed, decide)
        return INTERLEAVED, run.rounds, estimates, run.missing, run.untimed, run.spent
    if inject[0]:
        raise PerfSuiteError("--inject-slowdown needs the worker protocol on both sides")
    from harness.ab.whole_runs import compare_whole_runs

    lacking = ", ".join(f"{s.label} ({s.spec})" for s in sides if not s.has_worker)
    method = (
        f"{lacking} has no worker protocol: {runs} whole runs per side interleaved ABAB, paired t-test "
        "on run medians, Holm"
    )
    return (method, *compare_whole_runs(*sides, args, runs), {}, {})


def ab(
    base_spec: str,
    head_spec: str | None,
    pytest_args: list[str],
    inject: tuple[float, str] = (0.0, ""),
    budget: Budget | None = None,
    runs: int = 3,
    out: str | None = None,
    seed: int | None = None,
    pyproject: str = "pyproject.toml",
) -> ABResult:
    from harness.baseline.gate import Thresholds

    thresholds = Thresholds.from_pyproject(pyproject)
    budget = budget or Budget()
    args = [a for a in pytest_args if a != "--"]
    seed = random.randrange(2**31) if seed is None else seed
    with checked_out(base_spec, head_spec) as sides:
        start = time.perf_counter()
        decide = (thresholds.ab_threshold, thresholds.alpha)
        method, rounds, estimates, missing, untimed, spent = _run(sides, args, inject, budget, runs, seed, decide)
        found = table_verdicts(estimates, rounds, untimed, missing, thresholds.ab_threshold, thresholds.alpha)
        lines = [
            f"base {sides[0].describe()} vs head {sides[1].describe()}; {time.perf_counter() - start:.0f} s"
            + (f" ({', '.join(f'{k} {v:.0f} s' for k, v in spent.items())})" if spent else ""),
            *format_table(found, thresholds.alpha, f"{method}; threshold {thresholds.ab_threshold:.0%}"),
        ]
        doc = _doc(method, seed, sides, inject, thresholds, rounds, found, spent)
    if out:
        from harness.baseline.storage import write_json_atomic

        write_json_atomic(Path(out), doc)
    code = EXIT_REGRESSION if any(v.status == "regression" for v in found) else EXIT_OK
    return ABResult(lines, code, doc)
