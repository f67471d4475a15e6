"""Benchmarks, run from the repository root as modules: `python -m bench.bench_predict` etc.
(their figures and commands are in docs/benchmarks.md). Not shipped: the wheel holds
scalemae_det alone."""
