"""`python -m harness.ab.worker [pytest args]`: one side of an A/B comparison, with that side's code.

Each sweep of the comparison starts a fresh pair of these processes (harness/ab/runner.py): a
process's own speed, from where its code, heap and buffers landed, is then drawn anew for every
sweep, and the sweep is the comparison's unit. (Processes forked from one parent share its layout:
in one A/A their children leaned 2-3% one way across every case, so fork is not used.)

It speaks JSON lines on stdout (everything else goes to stderr):
  {"cmd": "cases"}              -> {"cases": [name, ...]}   the cases the pytest arguments select
  {"cmd": "prepare", "check": b} -> {"prepared": k}        builds the models of the cases listed, and
                                   with check, tests each (model, engine)'s parity with HF; on one
                                   thread, so both sides can prepare at once
  {"cmd": "open", "case": n, "check": b} -> {"tokens": t, "warm_s": s[, "work": {...}]} or {"skip": why}
                                   or {"error": why}
                                   builds the case outside any timing; with check, the engine's parity
                                   (prepare's, cached) and a generate kind's first round are compared
                                   with HF greedy; one warm-up unit (warm_s), whose work counters a
                                   generate kind reports (harness/engines/work.py)
  {"cmd": "round", "reps": k}   -> {"seconds": s}    k units of the open case, each timed, summed
  {"cmd": "close", "count": b}  -> {} or, with count, {"flops": n} where the case can be counted:
                                   one more unit, untimed, after the visit's rounds (engines/flops.py)
  {"cmd": "quit"}               -> exits
"""

from __future__ import annotations

import argparse
import json
import os
import sys

PROTOCOL = 4


def keyword_match(expr: str | None, names: list[str]) -> bool:
    """pytest's -k: each identifier matches when it is a substring of one of the names (any case)."""
    if not expr:
        return True
    from _pytest.mark.expression import Expression

    lowered = [n.lower() for n in names]
    return Expression.compile(expr).evaluate(lambda ident, **_: any(ident.lower() in n for n in lowered))


def selected_kinds(paths: list[str]) -> set[str] | None:
    """perf_tests/test_decode.py selects the decode kind; a folder, a package or nothing selects all."""
    files = [os.path.basename(p.split("::")[0]) for p in paths if p.split("::")[0].endswith(".py")]
    return {f.removeprefix("test_").removesuffix(".py") for f in files} or None


class Worker:
    def __init__(self, argv: list[str]) -> None:
        from harness.bench import PerfSession
        from harness.engines.registry import engine_sources
        from harness.options import add_options, options_from

        parser = argparse.ArgumentParser(add_help=False)
        add_options(parser.add_argument, aliases=True)  # pytest's arguments may use the old names too
        parser.add_argument("-k", dest="keyword", default=None)
        parser.add_argument("paths", nargs="*")
        args, _ = parser.parse_known_args(argv)
        options = options_from(lambda flag: getattr(args, flag.lstrip("-").replace("-", "_")))
        self.session = PerfSession(options, engine_sources=engine_sources(options.engine_modules))
        self.keyword, self.kinds = args.keyword, selected_kinds(args.paths)
        self.cases: dict = {}
        self.round = self.teardown = None
        self.counted: tuple = ()  # the open case's (engine, unit, setup, requests), for close's count
        self.last = 0.0

    def list_cases(self) -> list[str]:
        from harness.cases import KINDS

        for kind in KINDS:
            if self.kinds is not None and kind not in self.kinds:
                continue
            for case in self.session.cache.cases(kind):
                name = f"test_{kind}[{case.id}]"
                if keyword_match(self.keyword, [name, f"test_{kind}.py", "perf_tests"]):
                    self.cases[name] = case
        return list(self.cases)

    def prepare(self, check: bool) -> dict:
        """Build the listed cases' models (one at a time is held: the last stays) and, with check, test
        each (model, engine)'s parity with HF (cached; a failure is reported when its case is opened).
        On one thread: both sides prepare at once, and on 2 cores a probe of the quick tier took 17.2 s
        on one thread against 15.9 s on two. The engines built for it are let go again, so every timed
        engine is built at the process's own thread count."""
        import torch

        cache = self.session.cache
        threads, before = torch.get_num_threads(), set(cache.engine_keys())
        torch.set_num_threads(1)
        seen: set = set()
        try:
            for case in self.cases.values():
                cache.model(case.model)
                key = (case.model, case.engine)
                if not check or key in seen or cache.unavailable_reason(case.engine):
                    continue
                seen.add(key)
                try:
                    cache.parity_problem(case)
                except Exception as exc:  # noqa: BLE001 - not cached: the case's open meets it again
                    print(f"check of {key}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            torch.set_num_threads(threads)
            cache.release_engines(set(cache.engine_keys()) - before)
        return {"prepared": len(seen)}

    def answer(self, msg: dict) -> dict:
        cmd = msg["cmd"]
        if cmd == "cases":
            return {"cases": self.list_cases()}
        if cmd == "prepare":
            return self.prepare(bool(msg.get("check")))
        if cmd == "open":
            return self.open(msg["case"], bool(msg.get("check")))
        if cmd == "round":
            return self.run_round(int(msg.get("reps", 1)))
        if cmd == "close":
            try:
                return self.count() if msg.get("count") and self.counted else {}
            finally:
                if self.teardown is not None:
                    self.teardown()
                self.round = self.teardown = None
                self.counted = ()
        return {"error": f"unknown command {cmd!r}"}

    def open(self, name: str, check: bool) -> dict:
        from harness.cases import get_kind
        from harness.timing import now

        cache, case = self.session.cache, self.cases[name]
        reason = cache.unavailable_reason(case.engine) or cache.load_problem(case)
        if reason:
            return {"skip": f"engine {case.engine} unavailable: {reason}"}
        problem = cache.parity_problem(case) if check else None  # later sweeps: the same code, the same seed
        if problem:
            return {"error": f"parity check failed: {problem}"}
        engine, kind = cache.engine(case), get_kind(case.kind)
        if kind.step:
            step = kind.step_case(engine, case, cache.options.seed)
            tokens, self.teardown = kind.step_tokens(case), step.teardown
            unit, setup, requests = step.run, step.setup, None
        else:
            requests = cache.requests(case)
            engine.prepare(requests)
            if check:  # the outputs of this round are HF's, or the case is not timed
                problem = cache.check_rounds(case, requests, [engine.generate(requests)])
                if problem:
                    return {"error": f"output check failed: {problem}"}
            tokens, unit, setup = None, (lambda: engine.generate(requests)), None

        def run() -> object:
            if setup is not None:
                setup()
            start = now(cache.device)
            result = unit()
            self.last = now(cache.device) - start
            return result

        warm = run()  # on CUDA a second warm-up: the first pays for lazy set-up and the clock's climb
        if cache.device.type == "cuda":
            warm = run()
        self.round, self.counted = run, (engine, unit, setup, requests)
        reply = {"tokens": tokens if tokens is not None else warm.generated_tokens, "warm_s": self.last}
        return reply | ({"work": warm.work} if tokens is None and warm.work else {})

    def count(self) -> dict:
        """The open case's flops, counted over one more unit (harness/engines/flops.py), or {}."""
        import torch

        from harness.engines.flops import unit_flops

        counted = unit_flops(*self.counted)
        return {**counted, "counter": f"torch {torch.__version__}"} if counted else {}

    def run_round(self, reps: int) -> dict:
        total = 0.0
        for _ in range(reps):
            self.round()
            total += self.last
        return {"seconds": total}


def main(argv: list[str] | None = None) -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # only protocol lines on the real stdout
    argv = sys.argv[1:] if argv is None else argv
    try:
        worker, reply = Worker(argv), {"protocol": PROTOCOL}
    except Exception as exc:  # noqa: BLE001 - reported to the orchestrator, which names the side
        worker, reply = None, {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(reply), file=out, flush=True)
    for line in iter(sys.stdin.readline, ""):
        msg = json.loads(line)
        if msg["cmd"] == "quit" or worker is None:
            break
        try:
            reply = worker.answer(msg)
        except Exception as exc:  # noqa: BLE001 - reported to the orchestrator, which names the side
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), file=out, flush=True)
    if worker is not None and "cache" in vars(worker.session):
        worker.session.cache.close()  # engines with threads or processes of their own stop here
    out.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: a fresh pair per sweep, and freeing a model's tensors one by one took 2 s


if __name__ == "__main__":
    sys.exit(main())
