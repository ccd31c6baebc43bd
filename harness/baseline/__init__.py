"""Baselines per machine and the throughput regression gate."""

# The gate's modes, here so the command line can offer them without importing the gate (and scipy).
NORMALISE_MODES = ("run", "case", "off")  # machine-speed correction, see gate.Speed
MULTIPLE_MODES = ("holm", "none")  # adjustment of per-case p-values over a run's cases
