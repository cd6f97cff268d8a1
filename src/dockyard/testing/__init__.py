"""Helpers for tests and benchmarks: images, waiting, in-process clusters."""
