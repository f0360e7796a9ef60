"""Side-by-side performance runs; results are recorded in BENCHMARKS.md."""
