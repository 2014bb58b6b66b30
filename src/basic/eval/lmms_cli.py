"""lmms-eval's command line with the study's task set: `python -m basic.eval.lmms_cli [--local_tasks] ARGS`.

`basic evaluate` runs lmms-eval through this module so that one evaluation pays lmms-eval's start once:
its passes (with the images, and blind) are entries of lmms-eval's own `--config` list, run one after the
other in the same processes. `--local_tasks` says every task asked for is defined under `--include_path`;
lmms-eval's TaskManager then indexes only that folder instead of lmms-eval's two thousand task YAMLs as
well (seconds of every start). Everything else is lmms-eval's CLI unchanged.
"""

from __future__ import annotations

import functools
import sys


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    import lmms_eval.__main__ as lmms_main

    if "--local_tasks" in argv:
        argv.remove("--local_tasks")
        lmms_main.TaskManager = functools.partial(lmms_main.TaskManager, include_defaults=False)
    sys.argv = ["lmms_eval", *argv]
    lmms_main.cli_evaluate()


if __name__ == "__main__":
    main()
