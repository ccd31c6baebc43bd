"""`llm-perf` (also `python -m harness`): the suite's command line. What each subcommand does is
harness/commands.py; this module only parses. Everything after `--` goes to pytest, untouched."""

from __future__ import annotations

import argparse
import difflib
import sys

from harness import commands
from harness.errors import EXIT_USAGE, PerfSuiteError
from harness.options import OLD_NAMES, add_options, deprecation, renamed


class Parser(argparse.ArgumentParser):
    """argparse, exiting with the suite's usage code (14; argparse's own 2 is pytest's "interrupted")."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class DefaultsShown(argparse.HelpFormatter):
    """Every argument's help ends with its default, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if isinstance(action, argparse._StoreConstAction):  # store_true/false: the flag's name says it
            return text
        if "(default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def unknown_message(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """One line naming each unknown option, and the closest valid one where there is a close one."""
    known = [s for a in parser._actions for s in a.option_strings]
    parts = []
    for arg in unknown:
        close = difflib.get_close_matches(arg.split("=")[0], known, n=1) if arg.startswith("-") else []
        parts.append(arg + (f" (did you mean {OLD_NAMES.get(close[0], close[0])}?)" if close else ""))
    return f"{parser.prog}: error: unknown argument(s) {', '.join(parts)}; pytest's arguments go after --"


def _sub(sub, name: str, help_text: str, fn) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsShown)
    p.set_defaults(fn=fn, parser=p)
    return p


def _pytest_args(p: argparse.ArgumentParser, what: str) -> None:
    p.set_defaults(pytest_args=[])
    p.epilog = f"Arguments after -- go to pytest: {what}."


def _add_user(sub) -> None:
    info = _sub(
        sub, "info", "probe this machine: peaks (theoretical and measured), bandwidth check, health", commands.cmd_info
    )
    add_options(info.add_argument, ["device", "dtype"], aliases=True)
    info.add_argument("--slug", action="store_true", help="print only the machine slug (baselines/<slug>/)")

    roof = _sub(sub, "roofline", "prefill vs decode cost and decode bounds per model size", commands.cmd_roofline)
    add_options(roof.add_argument, ["models", "dtype", "device"], aliases=True)
    roof.add_argument(
        "--gpu", default=None, help="a known GPU (e.g. a100-80gb, h100-sxm, h200) instead of this machine"
    )
    roof.add_argument("--prompt-len", type=int, default=6, help="prompt tokens of the prefill row")
    roof.add_argument(
        "--simple", action="store_true", help="the tutorial's estimates: 2 x params x tokens, bytes = params"
    )

    eng = _sub(
        sub, "engines", "list the engines found, where each came from, whether it can run here", commands.cmd_engines
    )
    add_options(eng.add_argument, ["engine_modules"], aliases=True)

    cmp_ = _sub(
        sub, "compare", "judge a results file against a baseline (exit 10 on a regression)", commands.cmd_compare
    )
    cmp_.add_argument("baseline", help="the baseline results JSON")
    cmp_.add_argument("current", help="the results JSON to judge")
    _judging(cmp_)
    cmp_.add_argument("--any-machine", action="store_true", help="compare even when the machine slugs differ")

    base = _sub(sub, "baseline", "record this machine's baseline", None)
    base_sub = base.add_subparsers(dest="action", required=True, parser_class=Parser)
    upd = _sub(base_sub, "update", "run the suite (or take a results file) and store baselines/<slug>/baseline.json",
               commands.cmd_baseline)  # fmt: skip
    upd.add_argument("--from", dest="from_file", default=None, help="a results JSON to store instead of running")
    upd.add_argument("--runs", type=int, default=5, help="runs pooled into the baseline")
    upd.add_argument("--append", action="store_true", help="add the runs to the baseline there: a rolling history")
    upd.add_argument("--keep", type=int, default=20, help="with --append, the most recent runs kept")
    add_options(upd.add_argument, ["baselines_dir"])
    _pytest_args(upd, "the cases to run, as for pytest perf_tests (e.g. -- --perf-tier quick)")


def _judging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pyproject", default="pyproject.toml", help="where [tool.perf] is read")
    p.add_argument("--strict", action="store_true", help="an inconclusive case fails too (exit 12)")
    p.add_argument(
        "--summary", default=None, help="write the verdicts as markdown here (default: $GITHUB_STEP_SUMMARY if set)"
    )


def _add_ab(sub) -> None:
    abp = _sub(
        sub, "ab", "base against head on this machine, rounds interleaved (exit 10 on a regression)", commands.cmd_ab
    )
    abp.add_argument(
        "base", nargs="?", default=None, help="a git ref or a folder (or give --base-python / --base-path)"
    )
    abp.add_argument("head", nargs="?", default=None, help="a git ref or a folder (default: the working tree)")
    for side in ("base", "head"):
        abp.add_argument(
            f"--{side}-python", default=None, help=f"the {side} side's interpreter (a venv with its build)"
        )
        abp.add_argument(f"--{side}-path", default=None, help=f"a folder first on the {side} side's import path")
    commands.add_plan_options(abp)
    abp.add_argument("--out", default=None, help="keep both sides' rounds and the verdicts in this JSON file")
    abp.add_argument("--order-seed", type=int, default=None, help="seed of the visit and round order (default: random)")
    _judging(abp)
    _pytest_args(abp, "the cases, as for pytest perf_tests (e.g. -- perf_tests --perf-tier quick)")


def _add_other(sub) -> None:
    rep = _sub(
        sub, "report", "write report.md and figures from a results JSON or an `ab --out` file", commands.cmd_report
    )
    rep.add_argument("results", help="a results JSON (pytest --benchmark-json) or an `llm-perf ab --out` file")
    rep.add_argument("--compare", default=None, help="a baseline JSON to judge the results against")
    rep.add_argument("--out", default="report", help="the folder to write")
    rep.add_argument("--pyproject", default="pyproject.toml", help="where [tool.perf] is read")

    save = _sub(
        sub, "save-model", "write a spec's seeded model as an HF checkpoint (for a server)", commands.cmd_save_model
    )
    add_options(save.add_argument, ["models", "seed"], aliases=True)
    save.add_argument("--out", required=True, help="the folder to write")

    http = _sub(sub, "bench-http", "serve a spec's model with vLLM on 127.0.0.1 and run the serving cases",
                commands.cmd_bench_http)  # fmt: skip
    add_options(http.add_argument, ["models", "workloads"], aliases=True)
    http.add_argument("--eager", action="store_true", help="vLLM without graph compilation (quicker start)")
    _pytest_args(http, "--perf-engines, --request-rate, --goodput, ...")

    mc = _sub(sub, "model-check", "diagnostic: how much a built-in model's greedy output depends on its context",
              commands.cmd_model_check)  # fmt: skip
    add_options(mc.add_argument, ["models", "seed"], aliases=True)
    mc.add_argument("--prompts", type=int, default=8, help="prompts to try")
    mc.add_argument("--new-tokens", type=int, default=32, help="tokens generated per prompt")
    mc.add_argument("--hf-init", action="store_true", help="transformers' own init, without the rescaling")


def _add_history(sub) -> None:
    from harness.history.commands import add_parser

    add_parser(sub, _sub)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="llm-perf", description="llm-perf-suite: benchmark, compare and gate LLM inference engines")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="command")
    for add in (_add_user, _add_ab, _add_history, _add_other):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    rest: list[str] = []
    if "--" in argv:  # everything after -- goes to pytest, whatever it looks like
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1 :]
    argv, old = renamed(argv)
    if old:
        print(f"llm-perf: {deprecation(old)}", file=sys.stderr)
    args, unknown = parser().parse_known_args(argv)
    if unknown:
        print(unknown_message(args.parser, unknown), file=sys.stderr)
        return EXIT_USAGE
    if hasattr(args, "pytest_args"):
        args.pytest_args = rest
    elif rest:
        print(f"llm-perf {args.command}: takes no pytest arguments (after --): {' '.join(rest)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return args.fn(args)
    except PerfSuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
