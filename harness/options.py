"""The suite's options, defined once.

harness/settings.py's PerfOptions holds every default; OPTIONS says how each one is spelled on the
command line, parsed and explained. The pytest plugin adds OPTIONS to pytest, the CLI adds the ones
it needs to its subcommands, and both build a PerfOptions from what was given.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

from harness.cases import TIERS
from harness.option_values import at_least_one, csv, injection, int_csv, number, rates, slos
from harness.settings import PerfOptions


@dataclass(frozen=True)
class Option:
    flag: str
    dest: str  # the PerfOptions field; its default is the option's default
    help: str
    parse: Callable[[str], object] | None = None  # str -> value (None: the string itself)
    choices: tuple[str, ...] | None = None
    switch: str | None = None  # a flag without a value: "store_true", or "store_false" (e.g. --perf-no-parity)
    repeat: bool = False  # may be given several times (--perf-engine-module)
    many: bool = False  # takes one or more values after the flag (--goodput ttft:2000 tpot:200)
    old: str | None = None  # its name before the --perf- prefix: still taken, with a deprecation warning
    default_text: str | None = None  # how the help shows the default, where the value alone says too little

    @property
    def default(self):
        return {f.name: f.default for f in dataclasses.fields(PerfOptions)}[self.dest]

    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if self.switch or self.repeat:
            return "off" if self.switch else "none"
        if isinstance(self.default, tuple):
            return ",".join(map(str, self.default)) or "none"
        return "none" if self.default is None else str(self.default)

    def add_to(self, add_argument: Callable, aliases: bool = False) -> None:
        """Add to an argparse parser or a pytest option group (both take argparse's keywords); with
        aliases, the old name too (argparse: the pytest plugin rewrites old names itself)."""
        names = [self.flag, *([self.old] if aliases and self.old else [])]
        help_text = f"{self.help} (default: {self.shown_default()})"
        if self.switch:
            add_argument(*names, action="store_true", default=False, help=help_text)
        elif self.repeat:
            add_argument(*names, action="append", default=[], help=help_text)
        elif self.many:
            add_argument(*names, nargs="+", default=None, help=help_text)
        else:
            add_argument(*names, default=None, choices=self.choices, help=help_text)

    def value(self, raw):
        """What PerfOptions gets from the parsed command-line value (None or unset: the default)."""
        if self.switch:
            return (not raw) if self.switch == "store_false" else bool(raw)
        if self.repeat:
            return tuple(raw or ())
        if raw is None:
            return self.default
        return self.parse(raw) if self.parse else raw


OPTIONS = [
    Option("--perf-models", "models", "comma-separated model specs (`llm-perf info` lists them)", csv, old="--models"),
    Option(
        "--perf-engines",
        "engines",
        "comma-separated engines",
        csv,
        old="--engines",
        default_text="each case kind's own list, plus every engine registered by entry point",
    ),
    Option(
        "--perf-batch-sizes",
        "batch_sizes",
        "comma-separated batch sizes, replacing each kind's list",
        int_csv,
        old="--batch-sizes",
        default_text="each kind's own",
    ),  # fmt: skip
    Option("--perf-device", "device", "auto (CUDA when present), cpu or cuda", old="--device"),
    Option(
        "--perf-dtype",
        "dtype",
        "float32, bfloat16 or float16",
        old="--dtype",
        default_text="float32 on CPU, bfloat16 on CUDA",
    ),  # fmt: skip
    Option(
        "--perf-model-path",
        "model_path",
        "a local HF checkpoint folder to use instead of --perf-models",
        old="--model-path",
    ),  # fmt: skip
    Option("--perf-tier", "tier", "case matrix: quick, default or full", choices=TIERS),
    Option("--perf-rounds", "rounds", "timed rounds per case, at least", number("--perf-rounds")),
    Option("--perf-warmup", "warmup_rounds", "untimed warm-up rounds per case", number("--perf-warmup")),
    Option(
        "--perf-min-time",
        "min_time_s",
        "seconds the timed rounds span at least (more rounds for fast cases)",
        number("--perf-min-time", float),
    ),
    Option(
        "--perf-passes",
        "passes",
        "split each case's rounds over this many passes of the whole run, so a case meets the machine at "
        "several moments (steadier run to run on a shared machine; docs/gate.md)",
        at_least_one("--perf-passes"),
    ),
    Option(
        "--perf-strict-health",
        "strict_health",
        "refuse to benchmark on an unhealthy GPU (exit 13)",
        switch="store_true",
    ),
    Option(
        "--perf-kv-cache-mem",
        "kv_cache_mem",
        "paged engine KV pool: bytes (> 1) or a fraction of free memory (<= 1)",
        number("--perf-kv-cache-mem", float),
        old="--kv-cache-mem",
        default_text="serving cases: what static-batch reserves; others: enough for every sequence",
    ),
    Option(
        "--perf-preemption",
        "preemption",
        "paged engine: how to preempt when KV blocks run out",
        choices=("recompute", "swap"),
        old="--preemption",
    ),  # fmt: skip
    Option(
        "--perf-max-batch-size",
        "max_batch_size",
        "static-batch: requests per padded batch",
        number("--perf-max-batch-size"),
        old="--max-batch-size",
    ),  # fmt: skip
    Option(
        "--perf-max-num-seqs",
        "max_num_seqs",
        "paged (and vllm): most sequences per step",
        number("--perf-max-num-seqs"),
        old="--max-num-seqs",
    ),  # fmt: skip
    Option(
        "--perf-compile",
        "compile",
        "paged and manual on CPU: single-row matrix-vector products compiled by TorchInductor, and paged's "
        "decode steps of 16 rows or more attending through their block tables (needs a C++ compiler; each piece and "
        "batch bucket compiles the first time a step needs it, for fixed workloads in the warm-up)",
        switch="store_true",
    ),  # fmt: skip
    Option(
        "--perf-cuda-graphs",
        "cuda_graphs",
        "paged on CUDA: decode steps replayed from CUDA graphs captured per batch-size bucket (refused elsewhere)",
        switch="store_true",
    ),  # fmt: skip
    Option("--perf-seed", "seed", "seed of the model weights and of the requests", number("--perf-seed")),
    Option(
        "--request-rate",
        "request_rates",
        "serving: requests per second, arrivals seeded (inf: every request at t=0); a comma-separated list "
        "is a rate sweep, one case per rate (e.g. 0.5,1,2,4,inf)",
        rates,
    ),
    Option(
        "--perf-workloads",
        "workloads",
        "serving: comma-separated workloads replacing the tier's (docs/cases.md)",
        csv,
        old="--workloads",
        default_text="the tier's",
    ),  # fmt: skip
    Option(
        "--burstiness",
        "burstiness",
        "serving: gamma shape of the gaps between arrivals (1: Poisson; lower: burstier)",
        number("--burstiness", float),
    ),  # fmt: skip
    Option(
        "--max-concurrency",
        "max_concurrency",
        "serving: most requests in flight at once (0: no cap)",
        number("--max-concurrency"),
    ),  # fmt: skip
    Option(
        "--goodput",
        "goodput",
        "serving: SLOs in ms, e.g. ttft:2000 tpot:200 e2el:10000; goodput = requests/s meeting all of them",
        slos,
        many=True,
    ),
    Option(
        "--perf-openai-base-url",
        "openai_base_url",
        "openai engine: the server's base URL, e.g. http://127.0.0.1:8000/v1",
        old="--openai-base-url",
    ),  # fmt: skip
    Option(
        "--perf-openai-model",
        "openai_model",
        "openai engine: the served model's name",
        old="--openai-model",
        default_text="the first the server lists",
    ),  # fmt: skip
    Option(
        "--perf-openai-prompt",
        "openai_prompt",
        "openai engine: prompts as token ids, or as text decoded with --perf-model-path's tokenizer",
        choices=("ids", "text"),
        old="--openai-prompt",
    ),  # fmt: skip
    Option(
        "--perf-engine-module",
        "engine_modules",
        "add an engine class, package.module:Class (repeatable)",
        repeat=True,
        old="--engine-module",
    ),  # fmt: skip
    Option(
        "--perf-no-parity",
        "parity",
        "time engines without checking their tokens against HF greedy (for engines that sample)",
        switch="store_false",
        old="--no-parity",
    ),  # fmt: skip
    Option("--perf-baselines-dir", "baselines_dir", "where <machine slug>/baseline.json live"),
    Option("--perf-results-dir", "results_dir", "where --benchmark-compare saves this run"),
    Option(
        "--perf-strict", "strict", "--benchmark-compare: an inconclusive case fails too (exit 12)", switch="store_true"
    ),  # fmt: skip
    Option(
        "--perf-require-baseline",
        "require_baseline",
        "--benchmark-compare: no baseline for this machine is an error (exit 11), not a pass",
        switch="store_true",
    ),  # fmt: skip
    Option(
        "--perf-trace",
        "trace_dir",
        "serving cases: write the last round's timeline (Chrome trace JSON, for Perfetto UI) to this folder",
    ),
    Option(
        "--perf-summary",
        "summary",
        "--benchmark-compare: write the verdicts as markdown to this file",
        default_text="$GITHUB_STEP_SUMMARY when set, else none",
    ),  # fmt: skip
]
OLD_NAMES = {o.old: o.flag for o in OPTIONS if o.old}  # deprecated: taken for one more release, with a warning
BY_DEST = {o.dest: o for o in OPTIONS}


def add_options(add_argument: Callable, names: list[str] | None = None, aliases: bool = False) -> None:
    """Add the named options (PerfOptions fields; all when None) to a parser or pytest option group;
    with aliases, their old names too (argparse parsers)."""
    for opt in OPTIONS if names is None else [BY_DEST[n] for n in names]:
        opt.add_to(add_argument, aliases)


def renamed(args: list[str], taken: set[str] = frozenset()) -> tuple[list[str], list[str]]:
    """(args with each old option name replaced by its --perf- name, the old names found). Names another
    plugin has taken stay as they are: they are its options."""
    out, found = [], []
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in OLD_NAMES and name not in taken:
            found.append(name)
            arg = OLD_NAMES[name] + eq + value
        out.append(arg)
    return out, found


def deprecation(found: list[str]) -> str:
    return "deprecated option name(s), taken this release only: " + ", ".join(
        f"{name} -> {OLD_NAMES[name]}" for name in dict.fromkeys(found)
    )


def options_from(get: Callable[[str], object], names: list[str] | None = None, **overrides) -> PerfOptions:
    """A PerfOptions from parsed values: get(flag) returns what the command line gave for that option."""
    values = {o.dest: o.value(get(o.flag)) for o in (OPTIONS if names is None else [BY_DEST[n] for n in names])}
    return PerfOptions(**{**values, "inject": injection(os.environ), **overrides})
