"""A nightly job's results as a series: a store of runs (store.py), change points found in each
case's series (check.py), and the series drawn (plot.py)."""
