"""Helpers that build tiny random-weight models for tests and benchmarks (no downloads)."""
