"""The benchmark map (benchmarks.yaml, shipped in the package) as typed records: benchmark -> lmms-eval task.

`benchmark_map(profile)` gives, for the `mini` or `full` profile, each benchmark's task, split, metric and
scorer. Unknown profiles, benchmarks and keys are errors, so a typo cannot silently drop a benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from basic.schema import build

MAP_FILE = "benchmarks.yaml"
SCORERS = ("local", "server", "judge")
PAPER_BENCHMARKS = ("vqav2", "gqa", "sqa_img", "mmb_en", "mmb_cn", "mmvet", "vizwiz", "textvqa")


@dataclass(frozen=True)
class Benchmark:
    """How one benchmark is scored in one profile (see the header of benchmarks.yaml)."""

    name: str
    task: str
    split: str
    scored_by: str
    metric: str | None = None
    scale: float = 1.0
    judge: str | None = None
    submission: str | None = None
    upstream: str | None = None
    paper_split: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        where = f"{MAP_FILE}: {self.name}"
        if self.scored_by not in SCORERS:
            raise ValueError(f"{where}: scored_by={self.scored_by!r}; known: {', '.join(SCORERS)}")
        if self.scored_by == "server" and not self.submission:
            raise ValueError(f"{where}: a server-scored benchmark needs `submission` (its file name pattern)")
        if self.scored_by != "server" and not self.metric:
            raise ValueError(f"{where}: a benchmark scored by {self.scored_by} needs `metric`")
        if (self.scored_by == "judge") != (self.judge is not None):
            raise ValueError(f"{where}: `judge` (rule | llm) goes with scored_by: judge, and only there")


@cache
def _load() -> dict[str, dict[str, Benchmark]]:
    raw = yaml.safe_load(resources.files("basic.eval").joinpath(MAP_FILE).read_text(encoding="utf-8"))
    profiles: dict[str, dict[str, Benchmark]] = {}
    for profile, entries in raw.items():
        for name, entry in entries.items():
            profiles.setdefault(profile, {})[name] = build(
                Benchmark, entry, f"{MAP_FILE}: {profile}.{name}", name=name
            )
    return profiles


def benchmark_map(profile: str) -> dict[str, Benchmark]:
    """Every benchmark of `profile` (mini | full), in the map's order."""
    profiles = _load()
    if profile not in profiles:
        raise ValueError(f"unknown evaluation profile {profile!r}; known: {', '.join(profiles)}")
    return profiles[profile]


def select(profile: str, names: list[str] | None = None) -> list[Benchmark]:
    """The named benchmarks of `profile` (default: the paper's eight)."""
    available = benchmark_map(profile)
    names = list(names or PAPER_BENCHMARKS)
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(
            f"benchmarks {missing} are not in the {profile} profile; known: {', '.join(available)}"
        )
    return [available[n] for n in names]
