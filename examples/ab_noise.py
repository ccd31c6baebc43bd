"""Where an A/B comparison's noise lives: fresh process pairs, stretches of one case in one pair, blocks.

    python -m examples.ab_noise --pairs 4 --segments 3 --blocks 8 -- perf_tests --models small \
        --perf-tier quick -k "manual and decode and bs1 or paged and prefill and bs1"

Both sides are this working tree (an A/A: any change is noise). For each of --pairs fresh pairs of
worker processes, every selected case is opened, run for --blocks ABBA blocks and closed, --segments
times in turn (case 1, case 2, case 1, case 2, ...). A nested analysis of variance of the blocks' log
ratios then splits their spread three ways, per case:
  - block: the noise of one ABBA block, which the A/B's test models;
  - segment: how far a stretch of --blocks blocks in a row leans beyond its blocks' noise (a phase of
    the machine that favours one process for a few seconds);
  - pair: how far a pair of processes leans beyond its segments (a speed of the process's own: where
    its memory landed).

    python -m examples.ab_noise --passes-of AB.json

reads the rounds an `harness ab ... --out AB.json` kept and asks the same of its passes (each a fresh
pair of processes): do the passes' mean log ratios differ more than their blocks' noise allows
(a one-way analysis of variance per case, Fisher's combination over the cases)?

    python -m examples.ab_noise --orders-of DIR/*.json --exclude paged-bs1-ctx128

pools the blocks of `ab --out` files (an `ab-check --keep DIR`) by block order and the order of the
block before (orders_of): does either side gain from the order of the rounds?

    python -m examples.ab_noise --verdicts-of DIR/*.json

judges the rounds of `ab --out` files again, with the blocks taken as independent and with their
visits' design effect (harness/ab/stats.py), and lists the cases each way calls changed: what the
widening costs in a slowed case and saves in the unslowed ones.

    python -m examples.ab_noise --visits-of DIR/*.json --exclude paged-bs1-ctx128

splits each case's blocks in `ab --out` files into the noise of one block (sd within a visit) and the
lean of a visit beyond it (sd of visits' means, less what their blocks' noise explains; method of
moments, pooled over the files): how many visits, and of how many blocks, a change of a given size
needs.

    python -m examples.ab_noise --allocation 40 --blocks 3 -- perf_tests --models small --perf-tier quick \
        -k "paged-bs1-ctx128 and decode"

asks whether where a process's weights landed makes a lean of its own, with no second process:
two workers of this working tree in one process (A and B, the same seeded weights), ABBA blocks of
the one selected case between them. B's openings alternate: a fresh one (B's parameters copied to
new memory and its engines built again) and a kept one (the engine the fresh one built, opened
again). If the placement leans, the kept opening leans with the fresh one before it (same memory);
and a fresh opening draws a lean that a kept one does not.

A component the A/B's Wilcoxon test does not model makes its p too small; that is what
`harness ab`'s visits (segment) and fresh pairs per pass (pair) are for. F and p test each component
against the one below it. The segment and pair means are means, so one burst moves them: the robust
lines (medians, MAD) are printed beside.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics as st
import sys
from pathlib import Path

from scipy import stats

from harness.ab.rounds import Budget, CaseRounds, block_sums, interleave, reps_for
from harness.ab.sides import Side, open_both, worker_pair
from harness.ab.stats import log_ratios

ROOT = Path(__file__).resolve().parents[1]


def collect(pairs: int, segments: int, blocks: int, args: list[str], seed: int) -> list[dict]:
    """One row per (pair, segment, case): the log ratios of its blocks."""
    base, head = Side("base", "working tree", ROOT), Side("head", "working tree", ROOT)
    rng, rows = random.Random(seed), []
    for p in range(pairs):
        with worker_pair(base, head, args, args, base_first=p % 2 == 0) as pair:
            names = [c for c in pair[0].ask("cases")["cases"] if c in set(pair[1].ask("cases")["cases"])]
            reps: dict[str, int] = {}
            for s in range(segments):
                for name in names:
                    head_last = rng.random() < 0.5
                    opened, problem = open_both(pair, name, head_last)
                    if problem:
                        raise SystemExit(f"{name}: {problem}")
                    reps.setdefault(name, reps_for(opened, Budget()))
                    r = CaseRounds(name, reps=reps[name])
                    interleave(
                        pair[0],
                        pair[1],
                        r,
                        Budget(target=0.0, min_blocks=blocks, max_case_s=0.0),
                        rng,
                        lead="B" if head_last else "A",
                    )
                    for w in pair:
                        w.ask("close")
                    lr = log_ratios(*block_sums(r))
                    rows.append({"pair": p, "segment": s, "case": name, "log_ratios": lr})
                    print(f"pair {p} segment {s} {name}: {st.fmean(lr):+.2%}", file=sys.stderr, flush=True)
    return rows


def allocation_rows(openings: int, blocks: int, args: list[str], seed: int) -> list[dict]:
    """In this process, 2 x `openings` openings of the one case `args` select, alternately fresh and
    kept (see the module's doc): one row per opening, the log ratios of its blocks (A's seconds over
    B's: B's gain) and where B's first parameter lay."""
    from harness.ab.worker import Worker

    argv = [*args, "--no-parity"]
    a, b = Worker(argv), Worker(argv)
    names = a.list_cases()
    if len(names) != 1 or b.list_cases() != names:
        raise SystemExit(f"--allocation needs pytest args that select exactly one case; these select {len(names)}")
    name, rng, rows, reps = names[0], random.Random(seed), [], None
    for i in range(2 * openings):
        fresh = i % 2 == 0
        if fresh and i:
            cache = b.session.cache
            for param in cache.model(b.cases[name].model).model.parameters():
                param.data = param.data.clone()
            cache.release_engines(cache.engine_keys())
        opened = [a.open(name), b.open(name)]
        if any("tokens" not in o for o in opened):
            raise SystemExit(f"{name}: {opened}")
        reps = reps or reps_for(opened, Budget())
        ratios = []
        for _ in range(blocks):
            seconds = {a: 0.0, b: 0.0}
            for w in (a, b, b, a) if rng.random() < 0.5 else (b, a, a, b):
                seconds[w] += w.run_round(reps)["seconds"]
            ratios.append(math.log(seconds[a] / seconds[b]))
        a.close()
        b.close()
        memory = next(b.session.cache.model(b.cases[name].model).model.parameters()).data_ptr()
        rows.append({"fresh": fresh, "log_ratios": ratios, "memory": memory})
        print(f"opening {i} ({'fresh' if fresh else 'kept'}): {st.fmean(ratios):+.2%}", file=sys.stderr, flush=True)
    return rows


def _block_and_lean(groups: list[list[float]], centre: float) -> tuple[float, int, list[tuple[float, int]]]:
    """The sum of squares of blocks within their group and its df, and each group's (squared
    deviation of its mean from `centre`, size): what a method-of-moments split needs."""
    ss = sum(sum((x - st.fmean(g)) ** 2 for x in g) for g in groups)
    return ss, sum(len(g) - 1 for g in groups), [((st.fmean(g) - centre) ** 2, len(g)) for g in groups]


def allocation_of(rows: list[dict]) -> list[str]:
    """Per kind of opening: block sd and the openings' lean sd beyond it; then the correlation of
    consecutive openings' means with the same memory (fresh, then kept) and with new memory (kept,
    then the next fresh)."""
    out = []
    for fresh in (True, False):
        groups = [r["log_ratios"] for r in rows if r["fresh"] == fresh]
        if len(groups) < 2:
            raise SystemExit("--allocation needs at least 2 openings of each kind")
        ss, df, lean = _block_and_lean(groups, st.fmean(x for g in groups for x in g))
        block_var = ss / max(df, 1)
        lean_var = st.fmean(d2 - block_var / m for d2, m in lean) * len(lean) / (len(lean) - 1)
        out.append(
            f"{'fresh' if fresh else 'kept'} openings ({len(groups)}): block sd {math.sqrt(block_var):.2%}, "
            f"opening lean sd {math.sqrt(max(lean_var, 0.0)):.2%} (variance {lean_var * 1e4:+.1f} %^2), "
            f"mean {st.fmean(st.fmean(g) for g in groups):+.2%}"
        )
    means = [st.fmean(r["log_ratios"]) for r in rows]
    for label, start in (("same memory (fresh, then kept)", 0), ("new memory (kept, then fresh)", 1)):
        pairs = [(means[i], means[i + 1]) for i in range(start, len(means) - 1, 2)]
        if len(pairs) >= 3:
            rho = stats.pearsonr(*zip(*pairs, strict=True))
            rho_line = f"correlation {rho.statistic:+.2f} (p {rho.pvalue:.2f})"
            out.append(f"{label}: {len(pairs)} pairs of openings, {rho_line}")
    return out


def analyse(rows: list[dict]) -> list[str]:
    """Per case: the three components (as standard deviations of a log ratio), with F tests."""
    out = []
    for case in sorted({r["case"] for r in rows}):
        mine = [r for r in rows if r["case"] == case]
        pairs, segs = sorted({r["pair"] for r in mine}), sorted({r["segment"] for r in mine})
        n = len(mine[0]["log_ratios"])
        if len(pairs) < 2 or len(segs) < 2 or n < 2 or len(mine) != len(pairs) * len(segs):
            raise SystemExit(f"{case}: needs >= 2 pairs, >= 2 segments each, >= 2 blocks each, all present")
        if any(len(r["log_ratios"]) != n for r in mine):
            raise SystemExit(f"{case}: every segment must have the same number of blocks ({n})")
        seg_mean = {(r["pair"], r["segment"]): st.fmean(r["log_ratios"]) for r in mine}
        pair_mean = {p: st.fmean(seg_mean[p, s] for s in segs) for p in pairs}
        grand = st.fmean(pair_mean.values())
        df_pair, df_seg = len(pairs) - 1, len(pairs) * (len(segs) - 1)
        df_block = len(pairs) * len(segs) * (n - 1)
        ms_pair = len(segs) * n * sum((pair_mean[p] - grand) ** 2 for p in pairs) / df_pair
        ms_seg = n * sum((seg_mean[p, s] - pair_mean[p]) ** 2 for p in pairs for s in segs) / df_seg
        ms_block = sum((x - seg_mean[r["pair"], r["segment"]]) ** 2 for r in mine for x in r["log_ratios"]) / df_block
        sd_pair = math.sqrt(max(0.0, (ms_pair - ms_seg) / (len(segs) * n)))
        sd_seg = math.sqrt(max(0.0, (ms_seg - ms_block) / n))
        f_pair, f_seg = ms_pair / ms_seg, ms_seg / ms_block
        resid = [x - st.median(r["log_ratios"]) for r in mine for x in r["log_ratios"]]
        robust_block = 1.4826 * st.median(abs(v) for v in resid)
        seg_medians = [st.median(r["log_ratios"]) for r in mine]
        out += [
            f"{case}",
            f"  block sd {math.sqrt(ms_block):.2%} (robust {robust_block:.2%}); "
            f"segment sd {sd_seg:.2%} beyond that (F {f_seg:.2f}, p {stats.f.sf(f_seg, df_seg, df_block):.3f}); "
            f"pair sd {sd_pair:.2%} beyond that (F {f_pair:.2f}, p {stats.f.sf(f_pair, df_pair, df_seg):.3f})",
            f"  pairs' means {' '.join(f'{pair_mean[p]:+.1%}' for p in pairs)}; sd of segment medians "
            f"{st.stdev(seg_medians):.2%}, of which blocks explain about {1.25 * robust_block / math.sqrt(n):.2%}",
        ]
    return out


def passes_of(doc: dict) -> list[str]:
    """Per case, a one-way analysis of variance of its blocks' log ratios by pass (F on passes - 1 and
    blocks - passes degrees of freedom, the within-pass variance pooled); over the cases, Fisher's
    combination of their p. Needs `pass_blocks` (kept since the visits came in). A follow-up pass runs
    because the earlier ones leaned: give `ab` --follow-up 0 for this."""
    out, ps = [], []
    for case, c in sorted(doc["cases"].items()):
        r = _case_rounds(case, c)
        lr, counts = log_ratios(*block_sums(r)), c.get("pass_blocks")
        if not counts or sum(counts) != len(lr):
            raise SystemExit(f"{case}: no pass_blocks in this file (an ab --out from before visits)")
        groups, start = [], 0
        for n in counts:
            groups.append(lr[start : start + n])
            start += n
        groups = [g for g in groups if len(g) >= 2]
        if len(groups) < 2:
            continue
        f, p = stats.f_oneway(*groups)
        ps.append(float(p))
        out.append(
            f"{case}: passes {' '.join(f'{st.fmean(g):+.1%}' for g in groups)} (blocks {counts}); "
            f"F {f:.2f} on {len(groups) - 1} and {sum(map(len, groups)) - len(groups)} df, p {p:.3f}"
        )
    if ps:
        combined = stats.combine_pvalues(ps, method="fisher").pvalue
        out.append(f"all {len(ps)} cases (Fisher): p {combined:.4f}")
    return out


def orders_of(docs: list[dict], exclude: str = "") -> list[str]:
    """Blocks' log ratios (head over base, %) by their order and the order of the block before them in
    the same case, pooled over `ab --out` files (cases whose name contains `exclude` left out: a
    slowed case). In A/A every group should centre on 0. ABBA after ABBA and BAAB after BAAB give
    each side one round after its own process and one after the other; ABBA after BAAB and BAAB
    after ABBA give one side two rounds after the other process: a transition effect shows as
    those two leaning opposite ways, a bias of one side as all four leaning the same way. Where the
    file has visit_blocks (each opening's blocks), a visit's first block follows the opening, not the
    block before: it is grouped on its own ("ABBA first in a visit"). Since blocks are led by the side
    that ran last (harness/ab/rounds.py interleave), a visit's blocks all share one order: only the
    "ABBA then ABBA", "BAAB then BAAB" and "first in a visit" groups fill."""
    groups: dict[str, list[float]] = {}
    for _case, c, _, lr in _kept_ratios(docs, exclude):
        firsts = set(itertools.accumulate([0, *c.get("visit_blocks", [])]))
        for i in range(len(lr)):
            if i in firsts and "visit_blocks" in c:  # after an opening: no block before it in this visit
                groups.setdefault(f"{c['order'][i]} first in a visit", []).append(100 * lr[i])
            elif i:
                groups.setdefault(f"{c['order'][i - 1]} then {c['order'][i]}", []).append(100 * lr[i])
    out = []
    for key, x in sorted(groups.items()):
        se = st.stdev(x) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
        out.append(f"{key}: {len(x)} blocks, mean {st.fmean(x):+.2f}% (se {se:.2f}), median {st.median(x):+.2f}%")
    return out


def _kept_ratios(docs: list[dict], exclude: str = ""):
    """(case, its kept dict, its CaseRounds, its blocks' log ratios) for every case of every `ab --out`
    doc, leaving out cases whose name contains `exclude`."""
    for doc in docs:
        for case, c in doc["cases"].items():
            if exclude and exclude in case:
                continue
            r = _case_rounds(case, c)
            yield case, c, r, log_ratios(*block_sums(r))


def _case_rounds(case: str, c: dict) -> CaseRounds:
    return CaseRounds(
        case,
        c["tokens"],
        c["reps"],
        c["base_s"],
        c["head_s"],
        c["order"],
        pass_blocks=c.get("pass_blocks", []),
        visit_blocks=c.get("visit_blocks", []),
    )


def visits_of(docs: list[dict], exclude: str = "") -> list[str]:
    """Per case, over the files: the pooled sd of blocks within their visit, and the sd of a visit's
    lean beyond it (each visit's mean about its file's mean, less block variance / visit size, the
    mean over visits; 0 where that is negative)."""
    within: dict[str, list[tuple[float, int]]] = {}  # case -> (sum of squares within a visit, its df)
    lean: dict[str, list[tuple[float, int]]] = {}  # case -> (visit mean's squared deviation, visit size)
    for case, _, r, ratios in _kept_ratios(docs, exclude):
        groups, start = [], 0
        for m in r.visits():
            groups.append(ratios[start : start + m])
            start += m
        if len(groups) < 2:
            continue
        ss, df, deviations = _block_and_lean(groups, st.fmean(ratios))
        within.setdefault(case, []).append((ss, df))
        lean.setdefault(case, []).extend(deviations)
    out = []
    for case in sorted(within):
        df = sum(d for _, d in within[case])
        if df == 0:
            continue
        block_var = sum(ss for ss, _ in within[case]) / df
        visit_var = max(0.0, st.fmean(d2 - block_var / m for d2, m in lean[case]))
        sizes = [m for _, m in lean[case]]
        out.append(
            f"{case}: block sd {100 * math.sqrt(block_var):.2f}%, visit lean sd {100 * math.sqrt(visit_var):.2f}% "
            f"({len(sizes)} visits of {st.fmean(sizes):.1f} blocks in {len(docs)} file(s))"
        )
    return out


def verdicts_of(docs: dict[str, dict]) -> list[str]:
    """Per file: the cases called regression or improvement with independent blocks ("flat") and with
    the visits' design effect ("visits"), at the file's own threshold and alpha, and the injected case."""
    from harness.ab.rounds import case_estimate
    from harness.ab.runner import verdicts
    from harness.ab.stats import estimate

    out, tally = [], {"flat": [0, 0], "visits": [0, 0]}  # [trials with a false call, slowed trials caught]
    for name, doc in docs.items():
        rounds = {case: _case_rounds(case, c) for case, c in doc["cases"].items()}
        slowed = (doc.get("inject") or {}).get("case") or ""
        row = [f"{name} ({'slowed ' + slowed if slowed else 'A/A'}):"]
        if not all("visit_blocks" in c for c in doc["cases"].values()):
            row[0] += " (no visit_blocks kept: each case is one visit, so 'visits' calls nothing)"
        for label in tally:
            est = {
                case: case_estimate(r) if label == "visits" else estimate(*block_sums(r)) for case, r in rounds.items()
            }
            called = [
                v
                for v in verdicts(est, rounds, doc["threshold"], doc["alpha"])
                if v.status in ("regression", "improvement")
            ]
            false = [v for v in called if not (slowed and slowed in v.name and v.status == "regression")]
            caught = bool(slowed) and any(slowed in v.name and v.status == "regression" for v in called)
            tally[label][0] += bool(false)
            tally[label][1] += caught
            calls = ", ".join(f"{v.name} {v.status} {v.change:+.1%}" for v in called) or "none"
            row.append(f"  {label}: {calls}")
        out += row
    slowed_n = sum(bool((d.get("inject") or {}).get("case")) for d in docs.values())
    for label, (false, caught) in tally.items():
        out.append(f"{label}: {false} of {len(docs)} files with a false call; {caught} of {slowed_n} slowed caught")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, pytest_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m examples.ab_noise", description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", help="also write the rows (JSON)")
    parser.add_argument("--analyse", metavar="ROWS_JSON", help="only analyse rows written before by --out")
    parser.add_argument(
        "--passes-of", metavar="AB_JSON", help="do an `ab --out` file's passes differ beyond their blocks' noise?"
    )
    parser.add_argument(
        "--orders-of", metavar="AB_JSON", nargs="+", help="blocks' log ratios by block order, over `ab --out` files"
    )
    parser.add_argument(
        "--exclude", default="", help="with --orders-of, --visits-of: leave out cases whose name contains this"
    )
    parser.add_argument(
        "--verdicts-of", metavar="AB_JSON", nargs="+", help="judge `ab --out` files again, blocks flat and by visit"
    )
    parser.add_argument(
        "--visits-of", metavar="AB_JSON", nargs="+", help="each case's block sd and visit lean, over `ab --out` files"
    )
    parser.add_argument(
        "--allocation", type=int, metavar="N", help="in one process: N fresh and N kept openings of B's weights"
    )
    a = parser.parse_args(own)
    if a.visits_of:
        print("\n".join(visits_of([json.loads(Path(f).read_text()) for f in a.visits_of], a.exclude)))
        return 0
    if a.verdicts_of:
        print("\n".join(verdicts_of({f: json.loads(Path(f).read_text()) for f in a.verdicts_of})))
        return 0
    if a.orders_of:
        print("\n".join(orders_of([json.loads(Path(f).read_text()) for f in a.orders_of], a.exclude)))
        return 0
    if a.passes_of:
        print("\n".join(passes_of(json.loads(Path(a.passes_of).read_text()))))
        return 0
    if not a.allocation and (a.pairs < 2 or a.segments < 2 or a.blocks < 2):
        parser.error("--pairs, --segments and --blocks must each be at least 2: each component needs a spread")
    if a.analyse:
        rows = json.loads(Path(a.analyse).read_text())
    else:
        args = pytest_args or ["perf_tests"]
        if a.allocation:
            rows = allocation_rows(a.allocation, a.blocks, args, a.seed)
        else:
            rows = collect(a.pairs, a.segments, a.blocks, args, a.seed)
        if a.out:
            from harness.baseline.storage import write_json_atomic

            write_json_atomic(Path(a.out), rows)
    print("\n".join(allocation_of(rows) if a.allocation else analyse(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
