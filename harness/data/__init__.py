"""Data files shipped with the suite (package data), and the seeded scripts that made them."""
