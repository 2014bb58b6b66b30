"""`basic prepare`: the pipeline's first stage, the study's data in data/<profile>/ as params.yaml says.

mini world: the generated world (`basic mini data`, with the profile's `data` options), rebuilt from
scratch so that nothing stale survives a change of sizes. full world: the downloaded data is checked,
offline, against the profile's manifests (`basic download --check`); anything missing or unverified fails
the stage with the list of what is missing and the command that fetches it. Nothing is ever deleted there.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from basic.pipeline import config


class PrepareError(RuntimeError):
    """The data is not there, or could not be built; the message says what is missing."""


def mini_argv(study: config.Study) -> list[str]:
    return ["--out", str(study.data_dir), *config.cli_argv(study.active.data)]


def check_full(study: config.Study) -> None:
    """Fail naming every missing or unverified file of the profile's manifests under data/<profile>."""
    from basic.full.download import DownloadError, check, load_manifest

    dest = study.data_dir
    problems = []
    for name in study.active.data["manifests"]:  # type: ignore[union-attr]
        try:
            problems += [f"[{name}] {p}" for p in check(load_manifest(str(name)), dest)]
        except DownloadError as e:
            raise PrepareError(f"profiles.{study.profile}.data.manifests: {e}") from None
    if problems:
        fetch = " ".join(f"--manifest {m}" for m in study.active.data["manifests"])  # type: ignore[union-attr]
        shown = problems[:40] + ([f"... and {len(problems) - 40} more"] if len(problems) > 40 else [])
        raise PrepareError(
            f"the {study.profile} profile's data is not complete in {dest}/ ({len(problems)} problem(s)):\n  "
            + "\n  ".join(shown)
            + f"\nfetch it with: basic download {fetch} --dest {dest} "
            "(see docs/full_study.md)"
        )
    print(
        f"basic prepare: all files of {', '.join(map(str, study.active.data['manifests']))} verified in {dest}"
    )


def prepare(study: config.Study) -> None:
    if study.active.world == "full":
        check_full(study)
        return
    from basic.mini.cli import data_main

    if study.data_dir.exists():
        shutil.rmtree(study.data_dir)
    code = data_main(mini_argv(study))
    if code:
        raise PrepareError(f"basic mini data {' '.join(mini_argv(study))} failed (exit {code})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="basic prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    args = p.parse_args(argv)
    try:
        prepare(config.load(args.params))
    except (config.ConfigError, PrepareError) as e:
        print(f"basic prepare: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
