"""Baselines per machine (storage, recording, a rolling history of runs) and the stored-baseline gate."""
