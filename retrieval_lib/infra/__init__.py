"""Plumbing shared by every chapter: the artifact cache, the results contract, progress bars, plots, validation."""
