"""Benchmarks (`make bench`): each bench/bench_*.py module has ``run() -> list[str]`` printing
lines of timings and ratios against peers measured in the same run. Not part of the test suite."""
