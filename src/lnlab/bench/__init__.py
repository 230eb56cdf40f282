"""Benchmarks (``lnlab bench ...``): speed is claimed only where a benchmark shows it."""
