"""lmms-eval task YAMLs shipped with the project (the mini benchmarks and `basic_mmvet`) and their functions.

`basic evaluate` puts this directory (with the mini data paths filled in) on lmms-eval's `--include_path`.
"""
