"""Benchmarks (`observe-rt bench ...`): measured the same way on every machine, one command each."""
