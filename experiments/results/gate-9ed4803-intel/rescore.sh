#!/bin/bash
# rescore every kept run of the Intel tally under each normalise mode (an exploration)
# /tmp/pp-run and /tmp/pp-off hold this pyproject.toml with `normalise = "run"` / `"off"` in [tool.perf]
cd /work/main
D=experiments/results/gate-9ed4803-intel
for m in case run off; do
  pp=pyproject.toml; [ $m != case ] && pp=/tmp/pp-$m/pyproject.toml
  for scen in unchanged one-case-25 every-case-10; do
    n=0; ok=0; other=0
    for f in $D/$scen-*.json; do
      out=$(.venv/bin/python -m harness compare $D/baseline.json $f --pyproject $pp 2>&1); rc=$?
      n=$((n+1))
      flagged=$(echo "$out" | grep "REGRESSION" | awk '{print $1}' | tr '\n' ' ')
      case $scen in
        unchanged) [ $rc = 0 ] && ok=$((ok+1));;
        one-case-25) [ $rc = 10 ] && echo "$flagged" | grep -q "test_prefill\[small-paged-bs1-prompt128\]" && ok=$((ok+1)); echo "$flagged" | tr ' ' '\n' | grep -v "^$" | grep -vq "test_prefill\[small-paged-bs1-prompt128\]" && other=$((other+1));;
        every-case-10) [ $rc = 10 ] && ok=$((ok+1));;
      esac
    done
    echo "$m $scen: $ok of $n (one-case runs with another row flagged: $other)"
  done
done
