"""`python -m harness info|roofline|engines|model-check|compare|baseline|gate-check|ab|ab-check|report`."""

from __future__ import annotations

import argparse
import sys

from harness.baseline import MULTIPLE_MODES, NORMALISE_MODES
from harness.errors import PerfSuiteError
from harness.options import add_options, options_from


def _options(args: argparse.Namespace, names: list[str]):
    """The shared options (harness/options.py) this subcommand takes, as a PerfOptions."""
    return options_from(lambda flag: getattr(args, flag.lstrip("-").replace("-", "_")), names)


def cmd_info(args: argparse.Namespace) -> int:
    from harness.hardware import machine_slug, probe
    from harness.models import canonical_dtype, default_dtype, resolve_device

    options = _options(args, ["device", "dtype"])
    device = resolve_device(options.device)
    dtype = canonical_dtype(options.dtype) if options.dtype else default_dtype(device)
    if args.slug:  # names this machine's baseline folder; no measurement needed
        print(machine_slug(probe(device, dtype, measure=False)))
        return 0
    hw = probe(device, dtype)

    def fmt(value, unit: str) -> str:
        return f"{value:,.4g} {unit}" if value else "n/a"

    rows = [
        ("device", f"{hw.name} ({hw.device})"),
        ("machine slug", machine_slug(hw)),
        ("cpu", f"{hw.cpu_model}, {hw.cpu_cores} cores"),
        ("memory", fmt(hw.memory_bytes and hw.memory_bytes / 2**30, "GiB")),
        ("driver / cuda / torch", f"{hw.driver or '-'} / {hw.cuda or '-'} / {hw.torch}"),
        ("transformers", hw.transformers),
        ("dtype", hw.dtype),
        ("bandwidth peak (NVML)", fmt(hw.theoretical_bw_gbps, "GB/s")),
        ("bandwidth measured (copy)", fmt(hw.measured_bw_gbps, "GB/s")),
        (f"compute peak ({hw.table_entry or 'no table entry'})", fmt(hw.theoretical_tflops, "TFLOP/s")),
        ("compute measured (matmul)", fmt(hw.measured_tflops, "TFLOP/s")),
        ("bandwidth check", hw.bw_warning or "n/a (no NVML peak to check against)"),
    ]
    if hw.health is not None:
        h = hw.health
        rows += [
            ("health", "ok" if h.healthy else "UNHEALTHY: " + "; ".join(h.problems)),
            ("temperature", fmt(h.temperature_c, "C")),
            ("power limit", fmt(h.power_limit_w, "W")),
            ("other GPU processes", str(h.other_processes)),
            ("clock event reasons", ", ".join(h.clock_event_reasons) or "none"),
        ]
    rows += [("note", n) for n in hw.notes]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_roofline(args: argparse.Namespace) -> int:
    from harness.report.tables import roofline_tables

    for line in roofline_tables(args.model, args.gpu, args.dtype, args.prompt_len, args.simple, args.device):
        print(line)
    return 0


def cmd_model_check(args: argparse.Namespace) -> int:
    from harness.correctness.sensitivity import context_sensitivity
    from harness.models import build_model
    from harness.specs import get_spec

    options = _options(args, ["models", "seed"])
    for name in options.models:
        loaded = build_model(get_spec(name), seed=options.seed, context_sensitive=not args.hf_init)
        print(context_sensitivity(loaded, args.prompts, args.new_tokens).line(name), flush=True)
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    from harness.engines.registry import discover

    rows = discover(args.engine_module or [])
    width = max(len(r.name) for r in rows)
    for r in rows:
        print(f"{r.name:<{width}}  {r.origin:<28}  {'available' if r.available else 'unavailable: ' + r.reason}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.baseline.gate import Thresholds
    from harness.baseline.run import judge
    from harness.baseline.storage import load_results

    baseline, current = load_results(args.baseline), load_results(args.current)
    outcome = judge(baseline, current, Thresholds.from_pyproject(args.pyproject), args.baseline, args.any_machine)
    print("\n".join(outcome.lines))
    return outcome.exit_code


def cmd_baseline(args: argparse.Namespace) -> int:
    from harness.baseline.record import update_baseline

    path = update_baseline(args.pytest_args, args.from_file, args.runs)
    print(f"baseline written: {path} (commit it to make it this machine's reference)")
    return 0


def cmd_gate_check(args: argparse.Namespace) -> int:
    from harness.baseline.experiment import gate_check, replay

    if args.replay:
        return replay(args.replay, args.normalise, args.multiple)
    return gate_check(
        args.trials,
        args.slowdown,
        args.tier,
        args.pytest_args,
        args.baseline_runs,
        args.keep,
        args.normalise,
        args.multiple,
        args.case,
    )


def add_budget_options(sub: argparse.ArgumentParser) -> None:
    """How long `ab` (and each trial of `ab-check`) spends on a case; defaults from Budget."""
    from harness.ab.runner import Budget

    budget = Budget()
    sub.add_argument("--target", type=float, default=budget.target, help="stop a case at this CI half-width")
    sub.add_argument("--min-blocks", type=int, default=budget.min_blocks, help="ABBA blocks per case, at least")
    sub.add_argument("--max-case-s", type=float, default=budget.max_case_s, help="most seconds of rounds per case")
    sub.add_argument(
        "--min-round-s", type=float, default=budget.min_round_s, help="a round repeats the case's work this long"
    )
    sub.add_argument(
        "--passes", type=int, default=budget.passes, help="fresh worker pairs, each with its share of a case's time"
    )


def budget_from(args: argparse.Namespace):
    from harness.ab.runner import Budget

    return Budget(args.target, args.min_blocks, args.max_case_s, args.min_round_s, args.passes)


def cmd_ab(args: argparse.Namespace) -> int:
    from harness.ab.runner import ab

    result = ab(
        args.base,
        args.head,
        args.pytest_args,
        (args.inject_slowdown, args.inject_case),
        budget_from(args),
        args.runs,
        args.out,
        args.seed,
        args.pyproject,
    )
    print("\n".join(result.lines))
    return result.exit_code


def cmd_ab_check(args: argparse.Namespace) -> int:
    from harness.ab.experiment import ab_check

    return ab_check(args.trials, args.slowdown, args.case, args.pytest_args, args.keep, args.seed, budget_from(args))


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.render import write_report

    path = write_report(args.results, args.out, args.compare, args.pyproject)
    print(f"report written: {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness", description="llm-perf-suite command line")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="probe this machine: peaks (theoretical and measured), bandwidth check, health")
    add_options(info.add_argument, ["device", "dtype"])
    info.add_argument("--slug", action="store_true", help="print only the machine slug (baselines/<slug>/)")
    info.set_defaults(fn=cmd_info)
    roof = sub.add_parser("roofline", help="prefill vs decode cost and decode bounds per model size")
    roof.add_argument("--model", default="qwen3-0.6b")
    roof.add_argument("--gpu", default=None, help="a known GPU (e.g. a100-80gb, h100-sxm, h200); default: this machine")
    roof.add_argument("--dtype", default="float32", help="dtype of the prefill/decode table (default float32)")
    roof.add_argument("--prompt-len", type=int, default=6)
    roof.add_argument(
        "--simple", action="store_true", help="the tutorial's estimates: 2 x params x tokens, bytes = params"
    )
    roof.add_argument("--device", default="auto", help="probed when --gpu is not given")
    roof.set_defaults(fn=cmd_roofline)
    mc = sub.add_parser("model-check", help="how much a built-in model's greedy output depends on its context")
    add_options(mc.add_argument, ["models", "seed"])
    mc.add_argument("--prompts", type=int, default=8)
    mc.add_argument("--new-tokens", type=int, default=32)
    mc.add_argument("--hf-init", action="store_true", help="transformers' own init, without the rescaling")
    mc.set_defaults(fn=cmd_model_check)
    eng = sub.add_parser("engines", help="list the engines found, where each came from, whether it can run here")
    eng.add_argument("--engine-module", action="append", help="package.module:Class (repeatable)")
    eng.set_defaults(fn=cmd_engines)
    cmp_ = sub.add_parser("compare", help="apply the regression gate to two results files")
    cmp_.add_argument("baseline")
    cmp_.add_argument("current")
    cmp_.add_argument("--pyproject", default="pyproject.toml", help="where [tool.perf] thresholds are read")
    cmp_.add_argument("--any-machine", action="store_true", help="compare even when the machine slugs differ")
    cmp_.set_defaults(fn=cmd_compare)
    base = sub.add_parser("baseline", help="record this machine's baseline")
    base_sub = base.add_subparsers(dest="action", required=True)
    upd = base_sub.add_parser("update", help="run perf_tests (extra args go to pytest) and store the result")
    upd.add_argument("--from", dest="from_file", default=None, help="promote an existing results JSON instead")
    upd.add_argument("--runs", type=int, default=3, help="runs pooled into the baseline (default 3)")
    upd.set_defaults(pytest_args=[])  # what follows -- (or any option it does not know) goes to pytest
    upd.set_defaults(fn=cmd_baseline)
    gc = sub.add_parser("gate-check", help="experiment: how often the gate passes unchanged and fails a slowdown")
    gc.add_argument("--trials", type=int, default=20)
    gc.add_argument("--slowdown", type=float, default=0.10)
    gc.add_argument("--tier", default="quick")
    gc.add_argument("--baseline-runs", type=int, default=3, help="runs pooled into the experiment's baseline")
    gc.add_argument("--keep", default=None, metavar="DIR", help="store the baseline and every trial's results in DIR")
    gc.add_argument(
        "--replay", default=None, metavar="DIR", help="judge the runs stored by --keep DIR again; runs nothing"
    )
    gc.add_argument(
        "--normalise",
        choices=NORMALISE_MODES,
        default=None,
        help="machine-speed correction (overrides [tool.perf])",
    )
    gc.add_argument(
        "--multiple",
        choices=MULTIPLE_MODES,
        default=None,
        help="adjustment of the per-case p-values over a run's cases (overrides [tool.perf])",
    )
    gc.add_argument("--case", default="", help="slow only the cases whose name contains this (PERF_INJECT_CASE)")
    gc.set_defaults(pytest_args=[])  # what follows -- (or any option it does not know) goes to pytest
    gc.set_defaults(fn=cmd_gate_check)
    abp = sub.add_parser("ab", help="base against head on this machine, rounds interleaved (exit 10 on a regression)")
    abp.add_argument("base", help="a git ref or a folder")
    abp.add_argument("head", nargs="?", default=None, help="a git ref or a folder (default: the working tree)")
    abp.add_argument("--inject-slowdown", type=float, default=0.0, help="experiments: slow HEAD's matching cases")
    abp.add_argument("--inject-case", default="", help="the cases --inject-slowdown slows (substring of the name)")
    add_budget_options(abp)
    abp.add_argument("--runs", type=int, default=3, help="whole runs per side when a side has no worker")
    abp.add_argument("--out", default=None, help="write both sides' rounds and the verdicts to this JSON file")
    abp.add_argument("--seed", type=int, default=None, help="seed of the round order (default: random)")
    abp.add_argument("--pyproject", default="pyproject.toml", help="where [tool.perf] is read")
    abp.set_defaults(pytest_args=[])  # what follows -- (or any option it does not know) goes to pytest
    abp.set_defaults(fn=cmd_ab)
    abc = sub.add_parser("ab-check", help="experiment: A/A trials and single-case slowdowns, in random order")
    abc.add_argument("--trials", type=int, default=20)
    abc.add_argument("--slowdown", type=float, default=0.05)
    abc.add_argument("--case", required=True, help="the one case to slow (substring of its name)")
    abc.add_argument("--keep", default=None, metavar="DIR", help="store every trial's JSON in DIR")
    abc.add_argument("--seed", type=int, default=0)
    add_budget_options(abc)
    abc.set_defaults(pytest_args=[])  # what follows -- (or any option it does not know) goes to pytest
    abc.set_defaults(fn=cmd_ab_check)
    rep = sub.add_parser("report", help="write report.md and figures from a results JSON")
    rep.add_argument("results")
    rep.add_argument("--compare", default=None, help="a baseline JSON to compare against")
    rep.add_argument("--out", default="report")
    rep.add_argument("--pyproject", default="pyproject.toml", help="where [tool.perf] thresholds are read")
    rep.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    rest: list[str] = []
    if "--" in argv:  # everything after -- goes to pytest, whatever positionals the subcommand has
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1 :]
    args, unknown = parser().parse_known_args(argv)
    if hasattr(args, "pytest_args"):
        args.pytest_args = [*unknown, *rest]
    elif unknown or rest:
        print(f"error: {args.command} does not take {' '.join(unknown + rest)}", file=sys.stderr)
        return 2
    try:
        return args.fn(args)
    except PerfSuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
