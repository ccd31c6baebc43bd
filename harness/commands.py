"""What each `llm-perf` subcommand does; harness/__main__.py parses the command line."""

from __future__ import annotations

import argparse

from harness.options import options_from


def _options(args: argparse.Namespace, names: list[str]):
    """The shared options (harness/options.py) this subcommand takes, as a PerfOptions."""
    return options_from(lambda flag: getattr(args, flag.lstrip("-").replace("-", "_")), names)


def cmd_info(args: argparse.Namespace) -> int:
    from harness.hardware import info_rows, machine_slug, probe
    from harness.models import default_dtype, resolve_device
    from harness.roofline import canonical_dtype

    options = _options(args, ["device", "dtype"])
    device = resolve_device(options.device)
    dtype = canonical_dtype(options.dtype) if options.dtype else default_dtype(device)
    if args.slug:  # names this machine's baseline folder; no measurement needed
        print(machine_slug(probe(device, dtype, measure=False)))
        return 0
    rows = info_rows(probe(device, dtype))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_roofline(args: argparse.Namespace) -> int:
    from harness.report.tables import roofline_tables

    options = _options(args, ["models", "dtype", "device"])
    for model in options.models:
        for line in roofline_tables(
            model, args.gpu, options.dtype or "float32", args.prompt_len, args.simple, options.device
        ):
            print(line)
    return 0


def cmd_model_check(args: argparse.Namespace) -> int:
    from harness.correctness.sensitivity import context_sensitivity
    from harness.models import build_model, model_for
    from harness.specs import get_spec

    options = _options(args, ["models", "seed"])
    for name in options.models:
        spec = get_spec(name)
        loaded = (
            model_for(spec) if spec.source else build_model(spec, seed=options.seed, context_sensitive=not args.hf_init)
        )
        print(context_sensitivity(loaded, args.prompts, args.new_tokens).line(name), flush=True)
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    from harness.engines.registry import discover

    rows = discover(_options(args, ["engine_modules"]).engine_modules)
    width = max(len(r.name) for r in rows)
    for r in rows:
        print(f"{r.name:<{width}}  {r.origin:<28}  {'available' if r.available else 'unavailable: ' + r.reason}")
    return 0


def _thresholds(args: argparse.Namespace):
    from harness.judge import Thresholds

    return Thresholds.from_pyproject(args.pyproject, **({"strict": True} if args.strict else {}))


def _summarised(markdown: str, asked: str | None) -> None:
    from harness.report.summary import write_summary

    written = write_summary(markdown, asked)
    if written is not None:
        print(f"summary written: {written}")


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.baseline.run import judge
    from harness.baseline.storage import load_results

    baseline, current = load_results(args.baseline), load_results(args.current)
    outcome = judge(baseline, current, _thresholds(args), args.baseline, args.any_machine)
    print("\n".join(outcome.lines))
    _summarised(outcome.markdown(f"llm-perf compare: {args.current} against {args.baseline}"), args.summary)
    return outcome.exit_code


def cmd_baseline(args: argparse.Namespace) -> int:
    from harness.baseline.record import update_baseline

    root = _options(args, ["baselines_dir"]).baselines_dir
    path = update_baseline(args.pytest_args, args.from_file, args.runs, args.append, args.keep, root)
    print(f"baseline written: {path} (commit it to make it this machine's reference)")
    return 0


def add_plan_options(sub: argparse.ArgumentParser) -> None:
    """The A/B plan's knobs (harness/ab/plan.py), defaults from Plan."""
    from harness.ab.plan import Plan

    plan = Plan()
    for flag, dest, kind, what in PLAN_OPTIONS:
        sub.add_argument(flag, dest=dest, type=kind, default=getattr(plan, dest), help=what)


PLAN_OPTIONS = [
    ("--sweeps", "sweeps", int, "stage 1: sweeps, each a fresh pair of processes; a case is visited once per sweep"),
    ("--case-s", "case_s", float, "stage 1: seconds of timed rounds per case, both sides"),
    ("--suspects", "suspects", int, "stage 2: at most this many cases that lean slower"),
    ("--stage2-s", "stage2_s", float, "stage 2: seconds of timed rounds, split among its suspects (0: no stage 2)"),
    ("--stage2-sweeps", "stage2_sweeps", int, "stage 2: sweeps, each a fresh pair of processes"),
    ("--round-s", "round_s", float, "a round repeats the case's unit of work about this long"),
]


def plan_from(args: argparse.Namespace):
    from harness.ab.plan import Plan

    return Plan(**{dest: getattr(args, dest) for _, dest, _, _ in PLAN_OPTIONS})


def cmd_ab(args: argparse.Namespace) -> int:
    from harness.ab.runner import ab

    envs = ((args.base_python, args.base_path), (args.head_python, args.head_path))
    result = ab(
        args.base, args.head, args.pytest_args, plan_from(args), args.out, args.order_seed, _thresholds(args), envs
    )
    print("\n".join(result.lines))
    _summarised(result.markdown(), args.summary)
    return result.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.render import serving_table, write_report

    path = write_report(args.results, args.out, args.compare, args.pyproject)
    print("\n".join(serving_table(args.results)))  # the serving cases side by side, where there are any
    print(f"report written: {path}")
    return 0


def cmd_save_model(args: argparse.Namespace) -> int:
    from harness.served import save_model

    options = _options(args, ["models", "seed"])
    out = save_model(options.models[0], args.out, seed=options.seed)
    print(f"{options.models[0]} (seed {options.seed}) saved to {out}: serve it, then run the suite with")
    print("--perf-engines openai --perf-openai-base-url http://127.0.0.1:PORT/v1")
    return 0


def cmd_bench_http(args: argparse.Namespace) -> int:
    from harness.served import bench_http

    options = _options(args, ["models", "workloads"])
    workloads = options.workloads or ("mixed16",)
    return bench_http(options.models[0], workloads[0], args.pytest_args, eager=args.eager)


def cmd_history(args: argparse.Namespace) -> int:
    from harness.history import commands as history

    return {"add": history.add, "show": history.show, "check": history.check}[args.action](args)
