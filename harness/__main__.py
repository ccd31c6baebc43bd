"""`python -m harness info|roofline|engines|model-check|compare|baseline|gate-check|ab|ab-check|report`."""

from __future__ import annotations

import argparse
import sys

from harness.commands import (
    add_plan_options,
    cmd_ab,
    cmd_baseline,
    cmd_bench_http,
    cmd_compare,
    cmd_engines,
    cmd_info,
    cmd_model_check,
    cmd_report,
    cmd_roofline,
    cmd_save_model,
)
from harness.errors import PerfSuiteError
from harness.options import add_options


def _add_info(sub) -> None:
    info = sub.add_parser("info", help="probe this machine: peaks (theoretical and measured), bandwidth check, health")
    add_options(info.add_argument, ["device", "dtype"])
    info.add_argument("--slug", action="store_true", help="print only the machine slug (baselines/<slug>/)")
    info.set_defaults(fn=cmd_info)


def _add_roofline(sub) -> None:
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


def _add_model_check(sub) -> None:
    mc = sub.add_parser("model-check", help="how much a built-in model's greedy output depends on its context")
    add_options(mc.add_argument, ["models", "seed"])
    mc.add_argument("--prompts", type=int, default=8)
    mc.add_argument("--new-tokens", type=int, default=32)
    mc.add_argument("--hf-init", action="store_true", help="transformers' own init, without the rescaling")
    mc.set_defaults(fn=cmd_model_check)


def _add_engines(sub) -> None:
    eng = sub.add_parser("engines", help="list the engines found, where each came from, whether it can run here")
    eng.add_argument("--engine-module", action="append", help="package.module:Class (repeatable)")
    eng.set_defaults(fn=cmd_engines)


def _add_compare(sub) -> None:
    cmp_ = sub.add_parser("compare", help="apply the regression gate to two results files")
    cmp_.add_argument("baseline")
    cmp_.add_argument("current")
    cmp_.add_argument("--pyproject", default="pyproject.toml", help="where [tool.perf] thresholds are read")
    cmp_.add_argument("--any-machine", action="store_true", help="compare even when the machine slugs differ")
    cmp_.add_argument("--strict", action="store_true", help="an inconclusive row fails too (exit 12)")
    cmp_.set_defaults(fn=cmd_compare)


def _add_baseline(sub) -> None:
    base = sub.add_parser("baseline", help="record this machine's baseline")
    base_sub = base.add_subparsers(dest="action", required=True)
    upd = base_sub.add_parser("update", help="run perf_tests (extra args go to pytest) and store the result")
    upd.add_argument("--from", dest="from_file", default=None, help="promote an existing results JSON instead")
    upd.add_argument("--runs", type=int, default=5, help="runs pooled into the baseline (default: %(default)s)")
    upd.add_argument(
        "--append", action="store_true", help="add the runs to the baseline already there: a rolling history"
    )
    upd.add_argument("--keep", type=int, default=20, help="with --append, the runs kept (default: %(default)s)")
    upd.set_defaults(pytest_args=[])  # what follows -- (or any option it does not know) goes to pytest
    upd.set_defaults(fn=cmd_baseline)


def _add_ab(sub) -> None:
    abp = sub.add_parser("ab", help="base against head on this machine, rounds interleaved (exit 10 on a regression)")
    abp.add_argument("base", help="a git ref or a folder")
    abp.add_argument("head", nargs="?", default=None, help="a git ref or a folder (default: the working tree)")
    add_plan_options(abp)
    abp.add_argument("--out", default=None, help="write both sides' rounds and the verdicts to this JSON file")
    abp.add_argument("--seed", type=int, default=None, help="seed of the visit and round order (default: random)")
    abp.add_argument("--pyproject", default="pyproject.toml", help="where [tool.perf] is read")
    abp.add_argument("--strict", action="store_true", help="an inconclusive case fails too (exit 12)")
    abp.set_defaults(pytest_args=[])  # what follows -- (or any option it does not know) goes to pytest
    abp.set_defaults(fn=cmd_ab)


def _add_report(sub) -> None:
    rep = sub.add_parser("report", help="write report.md and figures from a results JSON")
    rep.add_argument("results")
    rep.add_argument("--compare", default=None, help="a baseline JSON to compare against")
    rep.add_argument("--out", default="report")
    rep.add_argument("--pyproject", default="pyproject.toml", help="where [tool.perf] thresholds are read")
    rep.set_defaults(fn=cmd_report)


def _add_served(sub) -> None:
    save = sub.add_parser("save-model", help="write a spec's seeded model as an HF checkpoint (for a server)")
    save.add_argument("model", help="a model spec, e.g. small")
    save.add_argument("--out", required=True, help="the folder to write")
    save.add_argument("--seed", type=int, default=0, help="the weights' seed (the suite's --perf-seed)")
    save.set_defaults(fn=cmd_save_model)
    http = sub.add_parser("bench-http", help="serve a spec's model with vLLM on 127.0.0.1 and run the serving cases")
    http.add_argument("--model", default="small", help="the model spec to save and serve")
    http.add_argument("--workload", default="mixed16", help="the serving workload (the server's KV is sized for it)")
    http.add_argument("--eager", action="store_true", help="vLLM without graph compilation (quicker start)")
    http.set_defaults(pytest_args=[])  # what follows -- goes to pytest: --engines, --request-rate, --goodput...
    http.set_defaults(fn=cmd_bench_http)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness", description="llm-perf-suite command line")
    sub = p.add_subparsers(dest="command", required=True)
    adders = (_add_info, _add_roofline, _add_model_check, _add_engines, _add_compare, _add_baseline)
    for add in (*adders, _add_ab, _add_report, _add_served):
        add(sub)
    return p


def _own_options(command: str, rest: list[str]) -> tuple[list[str], list[str]]:
    """Split what follows -- into the subcommand's own options (with their values) and pytest's
    arguments: `ab HEAD HEAD -- perf_tests -k x --inject-slowdown 0.05` must inject, not hand
    --inject-slowdown to a worker that ignores it."""
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    takes_value = {s: a.nargs != 0 for a in sub._actions for s in a.option_strings if s not in ("-h", "--help")}
    own, left, i = [], [], 0
    while i < len(rest):
        flag = rest[i].split("=", 1)[0]
        if flag in takes_value:
            width = 1 if "=" in rest[i] or not takes_value[flag] else 2
            own += rest[i : i + width]
            i += width
        else:
            left.append(rest[i])
            i += 1
    return own, left


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    rest: list[str] = []
    if "--" in argv:  # everything after -- goes to pytest, whatever positionals the subcommand has
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1 :]
    args, unknown = parser().parse_known_args(argv)
    if hasattr(args, "pytest_args") and rest:  # the command's own options may follow -- too: take them back
        own, rest = _own_options(args.command, rest)
        if own:
            args, unknown = parser().parse_known_args([*argv, *own])
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
