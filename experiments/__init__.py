"""Experiment configs: `default.py` is the base; every other file changes a few of its fields."""
