"""Tables and plots of a run."""
