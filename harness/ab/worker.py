"""`python -m harness.ab.worker [pytest args]`: one side of an A/B comparison, run with that side's
own code (cwd and PYTHONPATH are the side's checkout) and the same model seed as the other side.

It speaks JSON lines on stdout (everything else it or a library prints goes to stderr):
  {"cmd": "cases"}            -> {"cases": [name, ...]}    the cases the pytest args select
  {"cmd": "check"}            -> {"checked": k}            (protocol 3; after "cases") the parity
                                 probe of every (model, engine) the cases use, on one thread, so
                                 that both workers can run it at once (open finds the result cached)
  {"cmd": "open", "case": n}  -> {"tokens": t, "warm_s": s} or {"skip": why} or {"error": why}
                                 builds model and engine (untimed), checks the engine against HF
                                 greedy (probe, then the first round's outputs), one warm-up unit
                                 of work (warm_s: how long it took)
  {"cmd": "round", "reps": k} -> {"seconds": s}            one timed round: k units of the open case
                                 (k is the same on both sides, so a round is long enough that the
                                 first unit after the other process ran does not dominate it)
  {"cmd": "close"}            -> {}
  {"cmd": "quit"}             -> exits
Slowdown injection for experiments: --ab-inject-slowdown F --ab-inject-case PATTERN slows the rounds
of the cases whose name contains PATTERN by F (WorkClock's busy spin, proportional to the round's
own time), inside the timed round.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

PROTOCOL = 3  # 2: open reports warm_s, round takes reps; 3: check


def keyword_match(expr: str | None, names: list[str]) -> bool:
    """pytest's -k: each identifier matches when it is a substring of one of the names (any case)."""
    if not expr:
        return True
    from _pytest.mark.expression import Expression

    lowered = [n.lower() for n in names]
    return Expression.compile(expr).evaluate(lambda ident, **_: any(ident.lower() in n for n in lowered))


def selected_kinds(paths: list[str]) -> set[str] | None:
    """perf_tests/test_decode.py selects the decode kind; a folder or nothing selects all."""
    files = [os.path.basename(p.split("::")[0]) for p in paths if p.split("::")[0].endswith(".py")]
    return {f.removeprefix("test_").removesuffix(".py") for f in files} or None


class Worker:
    def __init__(self, argv: list[str]) -> None:
        from harness.bench import PerfSession
        from harness.engines.registry import engine_sources
        from harness.options import add_options, options_from

        parser = argparse.ArgumentParser(add_help=False)
        add_options(parser.add_argument)
        parser.add_argument("-k", dest="keyword", default=None)
        parser.add_argument("--ab-inject-slowdown", type=float, default=0.0)
        parser.add_argument("--ab-inject-case", default="")
        parser.add_argument("paths", nargs="*")
        args, _ = parser.parse_known_args(argv)
        self.inject = (args.ab_inject_slowdown, args.ab_inject_case)
        options = options_from(lambda flag: getattr(args, flag.lstrip("-").replace("-", "_")))
        self.session = PerfSession(options, engine_sources=engine_sources(options.engine_modules))
        self.keyword, self.kinds = args.keyword, selected_kinds(args.paths)
        self.cases: dict = {}
        self.round = None
        self.teardown = None

    def list_cases(self) -> list[str]:
        from harness.cases import KINDS

        cache = self.session.cache
        for kind in KINDS:
            if self.kinds is not None and kind not in self.kinds:
                continue
            cases = cache.cases(kind)
            for case in cases:
                name = f"test_{kind}[{case.id}]"
                if keyword_match(self.keyword, [name, f"test_{kind}.py", "perf_tests"]):
                    self.cases[name] = case
        return list(self.cases)

    def check(self) -> dict:
        """Run the parity probe of each (model, engine) the listed cases use (after "cases"),
        single-threaded: the orchestrator asks both workers at once, and on 2 cores a probe of the
        quick tier took 17.2 s on one thread against 15.9 s on two, so two at once take about what one
        took, where one after the other took twice that. The results are cached (EngineCache keeps
        them across model switches): open reports a failed probe as before. The engines the probes
        built are let go again, so that every timed engine is built at the process's own thread count
        (a thread an engine starts while torch runs on one thread may keep one). Untimed."""
        import torch

        cache = self.session.cache
        threads, before = torch.get_num_threads(), set(cache.engine_keys())
        torch.set_num_threads(1)
        seen: dict = {}
        try:
            for case in self.cases.values():
                key = (case.model, case.engine)
                if key in seen:
                    continue
                try:
                    seen[key] = None if cache.unavailable_reason(case.engine) else cache.parity_problem(case)
                except Exception as exc:  # not cached: the case's open meets it again and reports it
                    seen[key] = f"{type(exc).__name__}: {exc}"
        finally:
            torch.set_num_threads(threads)
            cache.release_engines(set(cache.engine_keys()) - before)
        return {"checked": len(seen)}

    def open(self, name: str) -> dict:
        from harness.cases import get_kind
        from harness.timing import WorkClock, now

        cache, case = self.session.cache, self.cases[name]
        reason = cache.unavailable_reason(case.engine)
        if reason:
            return {"skip": f"engine {case.engine} unavailable: {reason}"}
        problem = cache.parity_problem(case)
        if problem:
            return {"error": f"parity check failed: {problem}"}
        engine, kind = cache.engine(case), get_kind(case.kind)
        slowdown, pattern = self.inject
        clock = WorkClock(cache.device, slowdown if pattern and pattern in name else 0.0)
        if kind.step:
            step = kind.step_case(engine, case, self.session.options.seed)
            tokens, self.teardown = kind.step_tokens(case), step.teardown

            def run() -> None:
                if step.setup is not None:
                    step.setup()
                start = now(cache.device)
                clock.run(step.run)
                self.last = now(cache.device) - start
        else:
            requests = cache.requests(case)
            engine.prepare(requests)
            start = now(cache.device)
            first = engine.generate(requests)  # the warm-up round, checked against HF greedy
            self.last = now(cache.device) - start
            problem = cache.check_rounds(case, requests, [first])
            if problem:
                return {"error": f"output check failed: {problem}"}
            tokens, self.teardown = first.generated_tokens, None

            def run() -> None:
                start = now(cache.device)
                clock.run(lambda: engine.generate(requests))
                self.last = now(cache.device) - start

        if kind.step:
            run()  # warm-up
        if cache.device.type == "cuda":
            # The first unit after building pays CUDA's lazy set-up (library handles, the caching
            # allocator's growth) and the GPU's climb from its idle clock: on an H200 it read over 50 ms
            # where a steady decode step takes about 6 ms, so reps_for gave rounds of 2 steps (13 ms,
            # mostly launch and wake-up jitter) and an A/A read -7.5% (p < 0.0001). On CUDA, warm_s is
            # a second unit's time.
            run()
        self.round = run
        return {"tokens": tokens, "warm_s": self.last}

    def run_round(self, reps: int = 1) -> dict:
        """reps units of work, each timed on its own (set-up outside the clock), summed."""
        total = 0.0
        for _ in range(reps):
            self.round()
            total += self.last
        return {"seconds": total}

    def close(self) -> dict:
        if self.teardown is not None:
            self.teardown()
        self.round = self.teardown = None
        return {}


def main(argv: list[str] | None = None) -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # only protocol lines on the real stdout
    argv = sys.argv[1:] if argv is None else argv
    try:
        worker = Worker(argv)
        reply = {"protocol": PROTOCOL}
    except Exception as exc:  # reported to the orchestrator, which names the side
        worker, reply = None, {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(reply), file=out, flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "quit" or worker is None:
            break
        try:
            if cmd == "cases":
                reply = {"cases": worker.list_cases()}
            elif cmd == "check":
                reply = worker.check()
            elif cmd == "open":
                reply = worker.open(msg["case"])
            elif cmd == "round":
                reply = worker.run_round(int(msg.get("reps", 1)))
            elif cmd == "close":
                reply = worker.close()
            else:
                reply = {"error": f"unknown command {cmd!r}"}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), file=out, flush=True)
    if worker is not None and "cache" in vars(worker.session):
        worker.session.cache.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
