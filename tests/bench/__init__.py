"""Benchmarks: `make bench` runs them all; each prints one JSON object per line with
`benchmark`, `value`, `unit` and, where compared with a baseline measured in the same run,
`baseline` and `ratio` (ours / baseline, oriented so that higher is better)."""
