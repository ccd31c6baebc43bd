#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool runs it in a copy of the working tree, without .git):
#   1. tests/test_cuda.py: the output check as the benchmark cases call it, float32 and bfloat16 (the
#      near-tie margin calibrated from HF's own disagreement), every shipped engine passing and every
#      mutant refused; the swap path through pinned memory; the hardware probe;
#   2. batch-1 decode of paged in bfloat16 (`small` and the seeded `qwen3-0.6b`, unchecked: in bfloat16
#      the seeded models' check cannot vouch), eager and with --perf-cuda-graphs: the MBU table;
#   3. the A/B on CUDA: A/A of the decode bs1 ctx128 cases (must exit 0), then the same against a copy of
#      the tree with a real regression patch applied (experiments/regressions/$AB_PATCH; must exit 10).
# Each step has its own time limit so that one slow step cannot eat the others; logs and --out files
# go under $OUT. Usage there: `bash tools/gpu_session.sh` (PY=python3 by default; STEPS="ab_aa ab_slow"
# runs only those steps; AB_SWEEPS and AB_CASE_S set the A/B's --sweeps and --case-s, 6 and 6 by default;
# AB_LIMIT_S each A/B step's time limit, 170 by default). The A/B's cases: AB_SELECT, the pytest
# arguments after `--` (default `--perf-models small -k "decode and bs1 and ctx128"`, launch-bound on a GPU),
# and AB_PATCH, the head's regression (default decode-fresh-buffers). A case whose step is GPU work:
#   AB_SELECT='--perf-models small --perf-tier full -k "prefill and bs16 and prompt1024"' \
#   AB_PATCH=prefill-more-logits STEPS="ab_aa ab_slow" bash tools/gpu_session.sh
set -u
OUT=${OUT:-/tmp/gpu_session}
PY=${PY:-python3}
STEPS=${STEPS:-test_cuda mbu mbu_graphs ab_aa ab_slow}
mkdir -p "$OUT"
summary=()
step() {  # step NAME LIMIT_S EXPECTED_RC CMD...
    local name=$1 limit=$2 want=$3
    shift 3
    [[ " $STEPS " == *" $name "* ]] || return 0
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    summary+=("$(printf '%-10s rc %-3s (want %s) %4d s' "$name" "$rc" "$want" $((SECONDS - t0)))")
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw,temperature.gpu,memory.used --format=csv \
    | tee "$OUT/smi.txt"
$PY -c "import sys, torch, transformers, scipy; print(sys.version.split()[0], torch.__version__, \
transformers.__version__, scipy.__version__, torch.cuda.get_device_name())" | tee "$OUT/versions.txt"

step test_cuda 260 0 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
MBU=(-m pytest -q -p no:cacheprovider perf_tests --perf-models small,qwen3-0.6b --perf-dtype bfloat16
     -k "decode and bs1 and paged" --perf-no-parity)
step mbu 150 0 $PY "${MBU[@]}" --benchmark-json "$OUT/mbu.json"
step mbu_graphs 150 0 $PY "${MBU[@]}" --perf-cuda-graphs --benchmark-json "$OUT/mbu_graphs.json"
AB=(--sweeps "${AB_SWEEPS:-6}" --case-s "${AB_CASE_S:-6}")
eval "SEL=(-- perf_tests ${AB_SELECT:---perf-models small -k \"decode and bs1 and ctx128\"})"
LIMIT=${AB_LIMIT_S:-170}
HEAD_TREE="$OUT/head"  # this tree with a real regression applied
rm -rf "$HEAD_TREE" && mkdir -p "$HEAD_TREE" && cp -r harness perf_tests pyproject.toml "$HEAD_TREE" \
    && patch -s -d "$HEAD_TREE" -p1 < "experiments/regressions/${AB_PATCH:-decode-fresh-buffers}.patch"
step ab_aa "$LIMIT" 0 $PY -m harness ab . . "${AB[@]}" --out "$OUT/ab_aa.json" "${SEL[@]}"
step ab_slow "$LIMIT" 10 $PY -m harness ab . "$HEAD_TREE" "${AB[@]}" --out "$OUT/ab_slow.json" "${SEL[@]}"

for f in $STEPS; do
    echo "== $f"
    grep -v -e Warning -e "return forward_call" -e "^ *warnings.warn" "$OUT/$f.log" | tail -14
done
nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu --format=csv,noheader
echo "== summary"
printf '%s\n' "${summary[@]}"
