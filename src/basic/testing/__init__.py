"""Fixtures for tests and benchmarks, never imported by the shipped code: tiny random backbones of every
family (backbones), tiny LLaVA-format data (data), tiny LLaVA checkpoints and benchmark files (eval)."""
