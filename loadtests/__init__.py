"""Load tests and the proxy benchmark harness (see docs/benchmarks.md)."""
