"""Tracking: projects, runs, params, metrics, tags and artifacts of experiments."""
