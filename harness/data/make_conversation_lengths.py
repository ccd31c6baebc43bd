"""Writes conversation_lengths.csv: (prompt_len, output_len) pairs shaped like ShareGPT's, synthetic.

No trace is downloaded or copied. The shape comes from published summary statistics: the vLLM paper
(Kwon et al., "Efficient Memory Management for Large Language Model Serving with PagedAttention",
SOSP 2023, Section 6.1, Fig. 11) gives ShareGPT's mean input length as 161.31 tokens and mean output
length as 337.99 tokens, both heavily right-skewed (most requests short, a long tail up to the
2048-token context of the OPT models served). The paper gives no variance, so:

- each length is drawn from a lognormal with the published mean and sigma = 1.0 (mu = ln(mean) -
  sigma^2 / 2). With sigma 1.0 the mode sits at e^-1.5 = 22% of the mean and the 99th percentile at
  about 6x the mean (~1000 input, ~2100 output tokens): mass near zero and a tail to the plotted
  2048, as in Fig. 11. Inputs and outputs are drawn independently (no correlation is published);
- a pair longer than 2048 tokens in all is drawn again (the paper's requests had to fit OPT's context);
- every length is divided by SCALE = 12 and rounded up, so prompt + output <= 2048 / 12 + 2 = 172
  tokens, far inside the `tiny` (2048) and `small` (4096) specs' max positions. A round's cost grows
  with its longest request (its tokens come one after another; static-batch pads its batch to
  it): at SCALE 8 conv16's longest output was 138 tokens (mixed16's: 61) and a round on `small` took
  1.7x (paged) and 2.1x (static-batch) mixed16's; at 12 it is 92 tokens, and the fastest of 3 rounds
  on the 2-core host took 2.8 s (paged; mixed16 3.6 s) and 7.3 s (static-batch; mixed16 4.3 s).
  Rejection and rounding move the means a little; the file's header states them.

Run `python -m harness.data.make_conversation_lengths` to rewrite the file; tests/test_workloads.py
checks that the committed file is exactly what this script writes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

INPUT_MEAN, OUTPUT_MEAN = 161.31, 337.99  # ShareGPT, vLLM paper Fig. 11
SIGMA = 1.0
CONTEXT = 2048  # OPT's max sequence length, the bound of the paper's requests
SCALE = 12
ROWS = 200
SEED = 2023
FILE = Path(__file__).with_name("conversation_lengths.csv")


def lognormal(rng: np.random.Generator, mean: float, size: int) -> np.ndarray:
    """Lognormal draws with the given mean and sigma SIGMA."""
    return rng.lognormal(math.log(mean) - SIGMA**2 / 2, SIGMA, size=size)


def draw(rows: int = ROWS, seed: int = SEED) -> list[tuple[int, int]]:
    """`rows` (prompt_len, output_len) pairs: full-scale pairs within CONTEXT, then divided by SCALE."""
    rng = np.random.default_rng(seed)
    pairs: list[tuple[int, int]] = []
    while len(pairs) < rows:
        inputs, outputs = lognormal(rng, INPUT_MEAN, rows), lognormal(rng, OUTPUT_MEAN, rows)
        pairs += [(i, o) for i, o in zip(inputs, outputs, strict=True) if i + o <= CONTEXT]
    return [(max(1, math.ceil(i / SCALE)), max(1, math.ceil(o / SCALE))) for i, o in pairs[:rows]]


def render(pairs: list[tuple[int, int]]) -> str:
    """The CSV text: a header of '#' comments saying what the numbers are, then one pair a line."""
    mean_in = sum(p for p, _ in pairs) / len(pairs)
    mean_out = sum(o for _, o in pairs) / len(pairs)
    header = [
        "SYNTHETIC sample, not a trace: (prompt_len, output_len) pairs shaped like ShareGPT's length",
        "distributions as published in Kwon et al., 'Efficient Memory Management for Large Language Model",
        f"Serving with PagedAttention', SOSP 2023, Sec. 6.1 / Fig. 11 (mean input {INPUT_MEAN}, mean output",
        f"{OUTPUT_MEAN} tokens). Lognormal, sigma {SIGMA}, independent, pairs over {CONTEXT} tokens redrawn,",
        f"then divided by {SCALE} and rounded up. Seed {SEED}, {len(pairs)} rows; this sample's means:",
        f"input {mean_in:.2f}, output {mean_out:.2f} (x{SCALE}: {mean_in * SCALE:.0f}, {mean_out * SCALE:.0f}).",
        "Written by harness/data/make_conversation_lengths.py; do not edit by hand.",
    ]
    lines = [f"# {h}" for h in header] + ["prompt_len,output_len"] + [f"{p},{o}" for p, o in pairs]
    return "\n".join(lines) + "\n"


def main() -> None:
    FILE.write_text(render(draw()))
    print(f"wrote {FILE}")


if __name__ == "__main__":
    main()
