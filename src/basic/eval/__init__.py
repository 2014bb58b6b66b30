"""Evaluation through lmms-eval: the `basic_llava` model plugin, the mini benchmark tasks, the real benchmark
map, and `basic evaluate`, which runs lmms-eval on one checkpoint and writes its metrics JSON."""
