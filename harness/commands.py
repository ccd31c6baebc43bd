"""What each `python -m harness` subcommand does; harness/__main__.py parses the command line."""

from __future__ import annotations

import argparse

from harness.options import options_from


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
    from harness.baseline.run import judge
    from harness.baseline.storage import load_results
    from harness.judge import Thresholds

    baseline, current = load_results(args.baseline), load_results(args.current)
    thresholds = Thresholds.from_pyproject(args.pyproject, **({"strict": True} if args.strict else {}))
    outcome = judge(baseline, current, thresholds, args.baseline, args.any_machine)
    print("\n".join(outcome.lines))
    return outcome.exit_code


def cmd_baseline(args: argparse.Namespace) -> int:
    from harness.baseline.record import update_baseline

    path = update_baseline(args.pytest_args, args.from_file, args.runs, args.append, args.keep)
    print(f"baseline written: {path} (commit it to make it this machine's reference)")
    return 0


def add_plan_options(sub: argparse.ArgumentParser) -> None:
    """The A/B plan's knobs (harness/ab/plan.py), defaults from Plan."""
    from harness.ab.plan import Plan

    plan = Plan()
    for flag, dest, kind, what in PLAN_OPTIONS:
        sub.add_argument(flag, dest=dest, type=kind, default=getattr(plan, dest), help=f"{what} (default: %(default)s)")


PLAN_OPTIONS = [
    ("--sweeps", "sweeps", int, "stage 1: fresh process pairs; each case's visits are spread over them"),
    ("--case-s", "case_s", float, "stage 1: seconds of timed rounds per case, both sides"),
    ("--suspects", "suspects", int, "stage 2: at most this many cases that lean slower"),
    ("--stage2-s", "stage2_s", float, "stage 2: seconds of timed rounds, split among its suspects (0: no stage 2)"),
    ("--stage2-sweeps", "stage2_sweeps", int, "stage 2: fresh process pairs"),
    ("--round-s", "round_s", float, "a round repeats the case's unit of work about this long"),
]


def plan_from(args: argparse.Namespace):
    from harness.ab.plan import Plan

    return Plan(**{dest: getattr(args, dest) for _, dest, _, _ in PLAN_OPTIONS})


def cmd_ab(args: argparse.Namespace) -> int:
    from harness.ab.runner import ab
    from harness.judge import Thresholds

    thresholds = Thresholds.from_pyproject(args.pyproject, **({"strict": True} if args.strict else {}))
    result = ab(args.base, args.head, args.pytest_args, plan_from(args), args.out, args.seed, thresholds)
    print("\n".join(result.lines))
    return result.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.render import serving_table, write_report

    path = write_report(args.results, args.out, args.compare, args.pyproject)
    print("\n".join(serving_table(args.results)))  # the serving cases side by side, where there are any
    print(f"report written: {path}")
    return 0


def cmd_save_model(args: argparse.Namespace) -> int:
    from harness.served import save_model

    out = save_model(args.model, args.out, seed=args.seed)
    print(f"{args.model} (seed {args.seed}) saved to {out}: serve it, then --engines openai --openai-base-url ...")
    return 0


def cmd_bench_http(args: argparse.Namespace) -> int:
    from harness.served import bench_http

    return bench_http(args.model, args.workload, args.pytest_args, eager=args.eager)
