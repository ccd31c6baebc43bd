"""The docs cannot drift from the code, and the command line is one consistent thing."""

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

import harness.options as options_module
from harness.__main__ import main, parser
from harness.errors import EXIT_CODES, EXIT_USAGE
from tools import docs

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("page", sorted(docs.PAGES))
def test_generated_pages_are_what_the_code_makes(page):
    assert (ROOT / page).read_text() == docs.PAGES[page]().rstrip() + "\n", "stale: run `python -m tools.docs`"


def test_a_changed_option_help_makes_the_options_page_stale(monkeypatch):
    first = options_module.OPTIONS[0]
    edited = dataclasses.replace(first, help=first.help + " (now with more words)")
    monkeypatch.setattr(options_module, "OPTIONS", [edited, *options_module.OPTIONS[1:]])
    assert (ROOT / "docs/options.md").read_text() != docs.options_page().rstrip() + "\n"


def test_readme_is_a_guide_that_links_every_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "no dated tallies in the README"
    assert not re.search(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b", text), "no commit hashes"
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in text, f"README does not link docs/{page.name}"
    for link in re.findall(r"\]\(([^)#]+)", text):
        assert (ROOT / link).exists(), f"README links {link}, which does not exist"


def test_every_command_line_argument_explains_itself():
    for name, sub in docs._walk(parser(), "llm-perf"):
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"


def test_an_unknown_option_is_one_line_naming_the_closest(capsys):
    assert main(["ab", "--case-seconds", "3"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown argument(s) --case-seconds (did you mean --case-s?)" in err
    assert main(["info", "--devce", "cpu"]) == EXIT_USAGE
    assert "did you mean --perf-device?" in capsys.readouterr().err


def test_exit_codes_do_not_collide_with_pytests():
    assert all(code >= 10 for code in EXIT_CODES)
    assert len(set(EXIT_CODES)) == len(EXIT_CODES)


GATE_ONLY = {"--benchmark-compare", "--perf-require-baseline", "--perf-strict-health"}  # flags without a value
GATE_VALUES = {"--benchmark-json", "--perf-baselines-dir", "--perf-results-dir"}  # where things go, not what runs


def _what_runs(args: list[str]) -> tuple[str, list[str]]:
    """(baselines dir, the arguments that decide what runs and how) of a nightly or README command."""
    kept, where, i = [], "", 0
    while i < len(args):
        if args[i] in GATE_VALUES:
            where = args[i + 1] if args[i] == "--perf-baselines-dir" else where
            i += 2
            continue
        if args[i] not in GATE_ONLY:
            kept.append(args[i])
        i += 1
    return where, kept


def _nightly_and_readme_args(nightly: str, readme: str) -> tuple[dict, dict]:
    """({baselines dir: what the nightly's gated run runs}, {baselines dir: what the README records})."""
    import shlex

    gated = {}
    for block in re.findall(r"run: >\n((?:\s{10}.*\n)+)", nightly):
        args = shlex.split(" ".join(block.split()))
        if "--benchmark-compare" in args:
            where, kept = _what_runs(args[args.index("perf_tests") + 1 :])
            gated[where] = kept
    recorded = {}
    for line in re.findall(r"llm-perf baseline update .*", readme.replace("\\\n", " ")):
        args = shlex.split(line)
        where, _ = _what_runs(args[: args.index("--")])
        recorded[where] = _what_runs(args[args.index("--") + 1 :])[1]
    return gated, recorded


def test_the_readme_records_each_nightly_baseline_with_the_nightlys_own_arguments():
    nightly = (ROOT / ".github/workflows/nightly-gpu.yml").read_text()
    gated, recorded = _nightly_and_readme_args(nightly, (ROOT / "README.md").read_text())
    assert set(gated) == {"baselines/smollm2", "baselines/qwen3"}
    assert recorded == gated


def test_a_readme_baseline_command_missing_a_nightly_argument_is_caught():
    nightly = (ROOT / ".github/workflows/nightly-gpu.yml").read_text()
    readme = (ROOT / "README.md").read_text().replace("--perf-passes 3", "", 1)
    gated, recorded = _nightly_and_readme_args(nightly, readme)
    assert recorded != gated
