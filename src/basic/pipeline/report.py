"""The paper's tables and the training curves, rebuilt from results/ beside the published numbers.

Pure functions the notebooks call (notebooks/*.ipynb only load, call and show):

- `load(params, metrics_dir)` -> `Results`: the study (basic.pipeline.config), every run's metrics JSON
  (`{benchmark: {score, n, split, scored_by, status}}`, written by `basic evaluate`) and the reference
  numbers (`reference_numbers.yaml`, this package's copy of the paper's tables).
- `family_table(results, family)`: one table of the paper (main, loss_ablation, cross_model,
  layer_weights, supervision_strength, and depth: the ablation the paper states in words) as a tidy frame,
  one row per (table row, benchmark): our score (mean over the seeds of that setting), its spread (sd) and
  seed count, the paper's score, and both deltas against the table's baseline row. A table's runs are
  matched to the paper's rows by what they are (method, LLM, encoder, which losses, schedules, k), never by
  name; a run that matches no row of the paper gets its own row; a run without metrics is reported
  `missing` (a benchmark missing from its metrics: `not evaluated`), never dropped.
- `vision_table(results)`, `vision_findings(table)`: Table 1's rows, per benchmark the score with the image minus
  the blind score (`basic evaluate --blind`), mean ± sd over seeds, and which benchmarks measure vision at this
  scale (the LLaVA-1.5 rows' gap beyond 2 points and twice its seed sd).
- `markdown(table)`, `write_table(table, dir, name)`: Markdown and CSV; `plot_family(table)`: a seaborn figure.
- `curves_from_state`, `write_curves`, `load_curves`, `curves_summary`, `plot_curves`: training curves
  (LM, DAS and SDS terms) from the trainer's log history.
- `load_analysis`, `analysis_frame`, `analysis_table`, `analysis_markdown`, `write_analysis_table`,
  `analysis_findings`, `plot_analysis`, `plot_patches`: the paper's visual-embedding analysis (section 3) from results/analysis/
  (`basic analyze`): per-layer curves of the meaningful, grounded and end-token shares with the seed spread,
  the initial counts beside the paper's 74 / 576 and 217 / 576, the replacement test, example patches.

`main(argv)` is `basic report`: it executes every notebook with papermill (kernel named) into
results/notebooks/, renders each to HTML with nbconvert, and so writes results/tables/.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from basic.eval.benchmarks import benchmark_map
from basic.pipeline import config
from basic.pipeline.stage import CURVE_TERMS

REFERENCE_FILE = "reference_numbers.yaml"
FAMILIES = tuple(t for t in config.TABLES if t != config.ANALYSIS_TABLE)  # tables of benchmark scores
VISION = "vision"  # Table 1's runs, score with the image minus blind score (`vision_table`)
# The rule of `vision_findings`: a benchmark measures vision where the LLaVA-1.5 rows' gap exceeds both.
VISION_MIN_GAP = 2.0  # points
VISION_MIN_SDS = 2.0  # sds over seeds
TITLES = {
    "main": "Table 1: main results",
    "loss_ablation": "Table 2: loss ablation (Vicuna-7B)",
    "cross_model": "Table 3: other LLMs and encoders (the paper: MMBench-EN only)",
    "layer_weights": "Table 4a: layer-weight schedule",
    "supervision_strength": "Table 4b: supervision strength (patch weights)",
    "depth": "Depth ablation: k supervising layers of the Vicuna-7B stand-in (the paper: in words only)",
    VISION: "Table 1, with the image minus blind",
}
# The row each table's deltas are taken against (what the paper compares with): attributes it overrides.
BASELINES: dict[str, dict[str, Any]] = {
    "main": {"method": config.BASELINE},
    "loss_ablation": {"das": False, "sds": False},
    "cross_model": {"method": config.BASELINE},
    "layer_weights": {"layer_weights": "increasing"},
    "supervision_strength": {"patch_weights": "attention"},
    "depth": {"layers": "half"},
    VISION: {"method": config.BASELINE},
}
NOTEBOOKS = Path("notebooks")
NOTEBOOKS_OUT = Path("results/notebooks")
TABLES_DIR = Path("results/tables")
KERNEL = "python3"


class ReportError(RuntimeError):
    """A results file or reference that cannot be read; the message names it."""


@dataclass(frozen=True)
class Results:
    study: config.Study
    metrics: dict[str, dict[str, dict]]
    """run -> benchmark -> {score, n, split, scored_by, status, ...}, for the runs that have a metrics file."""
    references: dict


# ---------------------------------------------------------------------------------------------------------
# Loading


def references() -> dict:
    return yaml.safe_load((resources.files("basic.pipeline") / REFERENCE_FILE).read_text(encoding="utf-8"))


def load_metrics(metrics_dir: str | Path) -> dict[str, dict[str, dict]]:
    """Every `<run>.json` in `metrics_dir`; a file that is not a metrics mapping is an error naming it."""
    out = {}
    for path in sorted(Path(metrics_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ReportError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or not all(
            isinstance(v, dict) and "status" in v for v in data.values()
        ):
            raise ReportError(f"{path}: expected {{benchmark: {{score, n, split, scored_by, status}}}}")
        out[path.stem] = data
    return out


def load(params: str | Path = config.PARAMS_FILE, metrics_dir: str | Path = config.METRICS_DIR) -> Results:
    return Results(config.load(params), load_metrics(metrics_dir), references())


# ---------------------------------------------------------------------------------------------------------
# Tables


def attributes(run: config.Run) -> dict[str, Any]:
    """What a run is, in the terms the paper's tables use to tell rows apart."""
    args = run.basic_args
    return {
        "method": run.method,
        "llm": run.llm,
        "encoder": run.encoder,
        "das": args.basic_das_weight > 0,
        "sds": args.basic_sds_weight > 0,
        "layer_weights": args.basic_layer_weights if args.enabled else None,
        "patch_weights": args.basic_patch_weights if args.enabled else None,
        "layers": (args.basic_layers or "half") if args.enabled else None,
    }


def reference_rows(refs: dict, family: str) -> tuple[list[str], list[dict]]:
    """The paper's table `family`: its benchmark columns and rows as {attributes..., "paper": {bench: score}}."""
    table = refs[family]
    columns = list(table["columns"])
    rows = []
    for row in table["rows"]:
        if family == "cross_model":
            for method, key in ((config.BASELINE, "llava"), (config.METHOD, "basic")):
                rows.append(
                    {
                        "encoder": row["encoder"],
                        "llm": row["llm"],
                        "method": method,
                        "paper": {columns[0]: row[key]},
                    }
                )
            continue
        attrs = {k: v for k, v in row.items() if k != "scores"}
        if family == "layer_weights":
            attrs = {"layer_weights": attrs.pop("schedule")}
        rows.append({**attrs, "paper": dict(zip(columns, row["scores"]))})
    return columns, rows


def table_columns(results: Results, family: str) -> list[str]:
    """The paper's benchmark columns of `family`, then any other benchmark all the table's evaluated runs were
    scored on (the paper's Table 3 shows MMBench-EN only; a study may evaluate more: no paper number there)."""
    columns, _ = reference_rows(results.references, family)
    evaluated = [
        results.metrics[name] for name in results.study.tables.get(family, []) if name in results.metrics
    ]
    # Only benchmarks every evaluated run of the table was scored on: a column of "not evaluated" says nothing.
    scored = (
        set.intersection(*[{b for b, e in m.items() if e.get("status") == "scored"} for m in evaluated])
        if evaluated
        else set()
    )
    order = list(benchmark_map("full"))  # the benchmark map's order (the full map holds the mini one's)
    extra = sorted(scored - set(columns), key=lambda b: (order.index(b) if b in order else len(order), b))
    return columns + extra


def _matches(attrs: dict, row: dict) -> bool:
    return all(attrs.get(k) == v for k, v in row.items() if k != "paper")


def _label(attrs: dict, keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = attrs.get(k)
        if k == "layers":  # the paper's k; none: no BASIC
            parts.append(f"k={v}" if v is not None else f"{config.BASELINE} (no BASIC)")
            continue
        parts.append(("+" if v else "-") + k.upper() if isinstance(v, bool) else str(v))
    return " ".join(parts)


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return mean, sd


def seed_scores(results: Results, family: str) -> pd.DataFrame:
    """One line per (run, benchmark) of the table: the row it belongs to, its seed, score and status, and, where
    it was evaluated blind (`basic evaluate --blind`), its `blind_score` and `same_answer_blind` (else None)."""
    _, ref_rows = reference_rows(results.references, family)
    columns = table_columns(results, family)
    keys = [k for k in ref_rows[0] if k != "paper"]
    lines = []
    for name in results.study.tables.get(family, []):
        run = results.study.runs[name]
        attrs = attributes(run)
        matched = [i for i, row in enumerate(ref_rows) if _matches(attrs, row)]
        row_index = matched[0] if matched else None
        for bench in columns:
            run_metrics = results.metrics.get(name)
            entry = None if run_metrics is None else run_metrics.get(bench)
            status = (
                "missing" if run_metrics is None else "not evaluated" if entry is None else entry["status"]
            )
            scored = entry is not None and status == "scored"
            score, blind, same = (
                (entry.get("score"), entry.get("blind_score"), entry.get("same_answer_blind"))
                if scored
                else (None, None, None)
            )
            lines.append(
                {
                    "row": _label(attrs, keys),
                    "paper_row": row_index,
                    "run": name,
                    "seed": run.seed,
                    "settings": json.dumps(run.settings, sort_keys=True),
                    "benchmark": bench,
                    "score": score,
                    "blind_score": blind,
                    "same_answer_blind": same,
                    "status": status,
                    **{k: attrs[k] for k in keys},
                }
            )
    frame = pd.DataFrame(
        lines,
        columns=[
            "row",
            "paper_row",
            "run",
            "seed",
            "settings",
            "benchmark",
            "score",
            "blind_score",
            "same_answer_blind",
            "status",
            *keys,
        ],
    )
    # Runs that match one paper row but differ elsewhere (e.g. a learning rate) are separate rows.
    ambiguous = {row for row, settings in frame.groupby("row").settings if settings.nunique() > 1}
    for (row, _), group in frame.groupby(["row", "settings"], sort=False):
        if row in ambiguous:
            frame.loc[group.index, "row"] = f"{row} [{group.run.iloc[0]}]"
    return frame


def family_table(results: Results, family: str) -> pd.DataFrame:
    """The table `family` (see module docstring): one row per (row, benchmark), paper rows first, in order."""
    if family not in FAMILIES:
        raise ReportError(f"unknown table {family!r} (tables: {', '.join(FAMILIES)})")
    _, ref_rows = reference_rows(results.references, family)
    columns = table_columns(results, family)
    keys = [k for k in ref_rows[0] if k != "paper"]
    seeds = seed_scores(results, family)
    rows: list[dict] = []
    for row, group in seeds.groupby("row", sort=False):
        first = group.iloc[0]
        paper = ref_rows[int(first.paper_row)]["paper"] if pd.notna(first.paper_row) else {}
        for bench in columns:
            cell = group[group.benchmark == bench]
            scored = [float(s) for s in cell.score if pd.notna(s)]
            mean, sd = _mean_sd(scored)
            statuses = sorted(set(cell.status) - {"scored"})
            rows.append(
                {
                    "row": row,
                    **{k: first[k] for k in keys},
                    "benchmark": bench,
                    "ours": mean,
                    "ours_sd": sd,
                    "seeds": len(scored),
                    "runs": ";".join(dict.fromkeys(cell.run)),
                    "status": "scored" if scored else "/".join(statuses),
                    "paper": paper.get(bench),
                    "_order": first.paper_row if pd.notna(first.paper_row) else 1e9,
                }
            )
    # Paper rows nobody ran are shown too, so the table always has the paper's shape.
    present = {int(p) for p in seeds.paper_row.dropna()}
    for i, ref in enumerate(ref_rows):
        if i not in present:
            attrs = {k: ref[k] for k in keys}
            rows += [
                {
                    "row": _label(attrs, keys),
                    **attrs,
                    "benchmark": b,
                    "ours": None,
                    "ours_sd": None,
                    "seeds": 0,
                    "runs": "",
                    "status": "not run",
                    "paper": ref["paper"].get(b),
                    "_order": i,
                }
                for b in columns
            ]
    # The columns are named even when there is no row (a table with no run and no paper numbers, e.g. depth).
    table = pd.DataFrame(
        rows,
        columns=["row", *keys, "benchmark", "ours", "ours_sd", "seeds", "runs", "status", "paper", "_order"],
    )
    table = table.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    return _with_deltas(table, family, keys)


def vision_table(results: Results) -> pd.DataFrame:
    """Table 1's rows (the runs of `tables.main`), per benchmark: the score with the image minus the blind score
    (`basic evaluate --blind`: every image blank), computed per seed, as mean (`ours`) ± sd (`ours_sd`) over the
    seeds that have both (`seeds`), beside the means of `score`, `blind_score` and `same_answer_blind` over those
    seeds; `ours_delta`: this row's gap minus the LLaVA-1.5 row's (same LLM and encoder). A cell without a blind
    score has status `no blind score` (metrics written without --blind), or the main table's status (missing,
    not evaluated, unscored). No paper numbers: the paper has no blind baseline."""
    _, ref_rows = reference_rows(results.references, "main")
    keys = [k for k in ref_rows[0] if k != "paper"]
    seeds = seed_scores(results, "main")
    rows: list[dict] = []
    for row, group in seeds.groupby("row", sort=False):
        first = group.iloc[0]
        for bench, cell in group.groupby("benchmark", sort=False):
            both = cell[cell.score.notna() & cell.blind_score.notna()]
            gaps = [float(s) - float(b) for s, b in zip(both.score, both.blind_score)]
            mean, sd = _mean_sd(gaps)
            same = [float(v) for v in both.same_answer_blind if pd.notna(v)]
            statuses = sorted(set(cell.status) - {"scored"})
            rows.append(
                {
                    "row": row,
                    **{k: first[k] for k in keys},
                    "benchmark": bench,
                    "ours": mean,
                    "ours_sd": sd,
                    "seeds": len(gaps),
                    "runs": ";".join(dict.fromkeys(both.run)),
                    "status": "scored"
                    if gaps
                    else "no blind score"
                    if (cell.status == "scored").any()
                    else "/".join(statuses),
                    "score": _mean_sd([float(v) for v in both.score])[0],
                    "blind_score": _mean_sd([float(v) for v in both.blind_score])[0],
                    "same_answer_blind": _mean_sd(same)[0],
                    "paper": None,
                    "_order": first.paper_row if pd.notna(first.paper_row) else 1e9,
                }
            )
    table = pd.DataFrame(
        rows,
        columns=["row", *keys, "benchmark", "ours", "ours_sd", "seeds", "runs", "status"]
        + ["score", "blind_score", "same_answer_blind", "paper", "_order"],
    )
    table = table.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    return _with_deltas(table, VISION, keys)


def vision_findings(table: pd.DataFrame) -> str:
    """Which benchmarks measure vision at this scale, from `vision_table` (Markdown). The rule: a benchmark
    measures vision where, on every LLaVA-1.5 row evaluated blind on at least two seeds, the mean gap (score with
    the image minus blind score) exceeds both `VISION_MIN_GAP` points and `VISION_MIN_SDS` times its sd over
    seeds; it does not where one such row's gap does not; with one blind seed only it is undecided."""
    rule = (
        f"mean gap over seeds above {VISION_MIN_GAP:g} points and above {VISION_MIN_SDS:g} sd, "
        f"on every {config.BASELINE} row evaluated blind on two seeds or more"
    )
    llava = table[table.method == config.BASELINE]
    head = f"**Which benchmarks measure vision at this scale** ({config.BASELINE} rows, score minus blind score; {rule}):"
    lines = [head, ""]
    if not llava.ours.notna().any():
        lines.append(
            "- no blind scores yet (metrics written without `basic evaluate --blind`): "
            "which benchmarks measure vision cannot be told."
        )
        return "\n".join(lines) + "\n"
    rows = list(dict.fromkeys(llava[llava.ours.notna()].row))
    verdicts: dict[str, list[str]] = {"measure": [], "not": [], "one seed": [], "none": []}
    for bench, g in llava.groupby("benchmark", sort=False):
        g = g[g.ours.notna()]
        judged = g[g.seeds >= 2]
        gaps = {line.row: _number(line.ours, True) for line in g.itertuples()}
        for line in g[g.ours_sd.notna()].itertuples():
            gaps[line.row] += f" ± {line.ours_sd:.1f}"
        text = f"{bench} ({' / '.join(gaps.get(r, 'n/a') for r in rows)})"
        if g.empty:
            verdicts["none"].append(bench)
        elif judged.empty:
            verdicts["one seed"].append(text)
        elif all(
            line.ours > VISION_MIN_GAP and line.ours > VISION_MIN_SDS * line.ours_sd
            for line in judged.itertuples()
        ):
            verdicts["measure"].append(text)
        else:
            verdicts["not"].append(text)
    order = " / ".join(rows)
    lines.append(
        f"- measure vision: {', '.join(verdicts['measure']) or 'none'}; do not: "
        f"{', '.join(verdicts['not']) or 'none'} (gaps of {order})."
    )
    if verdicts["one seed"]:
        lines.append(f"- one blind seed only, undecided: {', '.join(verdicts['one seed'])}.")
    if verdicts["none"]:
        lines.append(f"- no blind score: {', '.join(verdicts['none'])}.")
    return "\n".join(lines) + "\n"


def _with_deltas(table: pd.DataFrame, family: str, keys: list[str]) -> pd.DataFrame:
    """ours_delta / paper_delta: this row minus the table's baseline row (same other attributes)."""
    override = BASELINES[family]
    ours_delta, paper_delta, delta_se = [], [], []
    for _, line in table.iterrows():
        target = {**{k: line[k] for k in keys}, **{k: v for k, v in override.items() if k in keys}}
        base = table[
            (table.benchmark == line.benchmark)
            & pd.concat([table[k] == v for k, v in target.items()], axis=1).all(axis=1)
        ]
        base = base[base.status != "not run"].head(1) if (base.status != "not run").any() else base.head(1)
        if base.empty or base.index[0] == line.name:
            ours_delta.append(None), paper_delta.append(None), delta_se.append(None)
            continue
        b = base.iloc[0]
        ours_delta.append(line.ours - b.ours if pd.notna(line.ours) and pd.notna(b.ours) else None)
        paper_delta.append(line.paper - b.paper if pd.notna(line.paper) and pd.notna(b.paper) else None)
        se = (
            math.sqrt(line.ours_sd**2 / line.seeds + b.ours_sd**2 / b.seeds)
            if pd.notna(line.ours_sd) and pd.notna(b.ours_sd)
            else None
        )
        delta_se.append(se)
    return table.assign(ours_delta=ours_delta, delta_se=delta_se, paper_delta=paper_delta)


def _number(value: Any, signed: bool = False) -> str:
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def markdown(table: pd.DataFrame, family: str | None = None) -> str:
    """A wide Markdown table: per row and benchmark `ours ± sd (Δ) · paper (Δ)`."""
    benches = list(dict.fromkeys(table.benchmark))
    rows = list(dict.fromkeys(table.row))
    head = ["row", "seeds", *benches]
    what = (
        "score minus blind score, per seed: mean ± sd over seeds"
        if family == VISION
        else "ours: mean ± sd over seeds"
    )
    lines = (
        [
            f"**{TITLES[family]}** ({what}, Δ vs {_baseline_text(family)}"
            + ("" if family == VISION else "; paper in brackets")
            + ")",
            "",
        ]
        if family
        else []
    )
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        part = table[table.row == row]
        cells = []
        for bench in benches:
            line = part[part.benchmark == bench].iloc[0]
            ours = (
                line.status
                if pd.isna(line.ours)
                else _number(line.ours)
                + (f" ± {line.ours_sd:.1f}" if pd.notna(line.ours_sd) else "")
                + (f" ({_number(line.ours_delta, True)})" if pd.notna(line.ours_delta) else "")
            )
            paper = (
                ""
                if pd.isna(line.paper)
                else f" [{_number(line.paper)}"
                + (f" ({_number(line.paper_delta, True)})" if pd.notna(line.paper_delta) else "")
                + "]"
            )
            cells.append(ours + paper)
        lines.append(f"| {row} | {int(part.seeds.max())} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def findings(table: pd.DataFrame, family: str) -> str:
    """What the table shows, computed from it (Markdown): per row, its deltas against the baseline row and
    whether they exceed twice their standard error from the seed spread, beside the paper's deltas; and the
    benchmarks on which every run scores the same (no signal). Written so the notebook states a null result."""
    scored = table[table.ours.notna()]
    flat = [b for b, g in scored.groupby("benchmark", sort=False) if g.ours.nunique() == 1 and len(g) > 1]
    lines = [f"**What {TITLES[family].split(':')[0]} shows** (Δ vs {_baseline_text(family)}):", ""]
    for row, g in table[table.ours_delta.notna() & ~table.benchmark.isin(flat)].groupby("row", sort=False):
        d = g.ours_delta.astype(float)
        text = f"- {row}: mean Δ {d.mean():+.1f} over {len(d)} benchmarks ({(d > 0).sum()} up, {(d < 0).sum()} down)"
        se = g.delta_se.dropna().astype(float)
        if len(se) == len(d) and len(d):
            beyond = int((d.abs() > 2 * se).sum())
            text += f"; {beyond} of {len(d)} beyond twice the seed standard error"
        else:
            text += "; one seed, so no spread to judge it by"
        paper = g.paper_delta.dropna().astype(float)
        if len(paper):
            text += f". Paper, same benchmarks: mean Δ {paper.mean():+.1f} ({(paper > 0).sum()} of {len(paper)} up)"
        lines.append(text + ".")
    if len(lines) == 2:
        lines.append("- no row has both its own and its baseline's scores yet.")
    if flat:
        lines.append(
            f"- no signal on {', '.join(flat)}: every run scores the same there "
            f"({', '.join(_number(scored[scored.benchmark == b].ours.iloc[0]) for b in flat)})."
        )
    return "\n".join(lines) + "\n"


def _baseline_text(family: str) -> str:
    return ", ".join(f"{k}={'off' if v is False else v}" for k, v in BASELINES[family].items())


def write_table(
    table: pd.DataFrame, out_dir: str | Path, name: str, family: str | None = None
) -> tuple[Path, Path]:
    """`<name>.csv` (tidy, every number) and `<name>.md` (the wide view) in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / f"{name}.csv", out / f"{name}.md"
    table.to_csv(csv, index=False, float_format="%.4f")
    md.write_text(markdown(table, family), encoding="utf-8")
    return csv, md


def frame_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A plain Markdown table of any frame (numbers rounded to `digits`)."""

    def cell(v: Any) -> str:
        return (
            ""
            if v is None or (isinstance(v, float) and math.isnan(v))
            else f"{v:.{digits}g}"
            if isinstance(v, float)
            else str(v)
        )

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_frame(frame: pd.DataFrame, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """`<name>.csv` and `<name>.md` of any frame (the curves summary)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / f"{name}.csv", out / f"{name}.md"
    frame.to_csv(csv, index=False, float_format="%.6g")
    md.write_text(frame_markdown(frame), encoding="utf-8")
    return csv, md


def missing_runs(results: Results, family: str | None = None) -> list[str]:
    """Runs of the study (or of one table) without a metrics file."""
    names = results.study.tables.get(family, []) if family else list(results.study.runs)
    return [n for n in dict.fromkeys(names) if n not in results.metrics]


def plot_family(table: pd.DataFrame, seeds: pd.DataFrame | None = None, title: str | None = None):
    """Our scores (bars: mean over seeds, whiskers: sd, from `seed_scores`) beside the paper's, one colour per row."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    benches = list(dict.fromkeys(table.benchmark))
    rows = list(dict.fromkeys(table.row))
    palette = dict(zip(rows, sns.color_palette(n_colors=len(rows))))
    fig, axes = plt.subplots(1, 2, figsize=(max(5.0, 1.3 * len(benches)) * 2, 4.2), squeeze=True)
    ours = (
        seeds.dropna(subset=["score"])
        if seeds is not None
        else table.dropna(subset=["ours"]).rename(columns={"ours": "score"})
    )
    if ours.empty:
        axes[0].text(0.5, 0.5, "no scores yet", ha="center", va="center", transform=axes[0].transAxes)
    else:
        sns.barplot(
            ours,
            x="benchmark",
            y="score",
            hue="row",
            order=benches,
            hue_order=[r for r in rows if r in set(ours.row)],
            palette=palette,
            errorbar="sd",
            ax=axes[0],
            legend=False,
        )
    axes[0].set(title="this study", ylabel="score", xlabel="")
    paper = table.dropna(subset=["paper"]).drop_duplicates(["row", "benchmark"])
    if not paper.empty:
        sns.barplot(
            paper,
            x="benchmark",
            y="paper",
            hue="row",
            order=benches,
            palette=palette,
            ax=axes[1],
            legend=False,
        )
    else:
        axes[1].text(0.5, 0.5, "no published numbers", ha="center", va="center", transform=axes[1].transAxes)
    axes[1].set(title="paper", ylabel="score", xlabel="")
    if rows:
        fig.legend(
            handles=[plt.Rectangle((0, 0), 1, 1, color=palette[r]) for r in rows],
            labels=rows,
            loc="lower center",
            ncol=min(len(rows), 4),
            frameon=False,
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08 + 0.05 * ((len(rows) - 1) // 4), 1, 1))
    return fig


# ---------------------------------------------------------------------------------------------------------
# Training curves


def load_curves(curves_dir: str | Path = config.CURVES_DIR, runs: list[str] | None = None) -> pd.DataFrame:
    """Long frame (run, stage, step, term, value) of results/curves/<run>/<stage>.json."""
    lines = []
    for path in sorted(Path(curves_dir).glob("*/*.json")):
        run, stage = path.parent.name, path.stem
        if runs is not None and run not in runs:
            continue
        for point in json.loads(path.read_text(encoding="utf-8")):
            for term in CURVE_TERMS:
                if term in point:
                    lines.append(
                        {
                            "run": run,
                            "stage": stage,
                            "step": point["step"],
                            "term": term,
                            "value": point[term],
                        }
                    )
    return pd.DataFrame(lines, columns=["run", "stage", "step", "term", "value"])


def curves_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per run, stage and term: logged points, first and last value."""
    if curves.empty:
        return pd.DataFrame(columns=["run", "stage", "term", "points", "first", "last"])
    ordered = curves.sort_values("step", kind="stable")
    return (
        ordered.groupby(["run", "stage", "term"], sort=True)["value"]
        .agg(points="count", first="first", last="last")
        .reset_index()
    )


def plot_curves(curves: pd.DataFrame):
    """One panel per (stage, term): LM loss, DAS and SDS over steps, one line per run."""
    import seaborn as sns

    terms = [t for t in ("lm_loss", "das", "sds") if t in set(curves.term)]
    data = curves[curves.term.isin(terms)]
    stages = [s for s in ("pretrain", "finetune") if s in set(data.stage)]
    grid = sns.relplot(
        data,
        x="step",
        y="value",
        hue="run",
        row="stage",
        row_order=stages,
        col="term",
        col_order=terms,
        kind="line",
        facet_kws={"sharey": False, "sharex": False},
        height=2.6,
        aspect=1.3,
    )
    return grid.figure


# ---------------------------------------------------------------------------------------------------------
# The embedding analysis (the paper's section 3): results/analysis/<run>.json, written by `basic analyze`

ANALYSIS_MEASURES = ("meaningful_fraction", "grounded_fraction", "eos_fraction")


def load_analysis(analysis_dir: str | Path = config.ANALYSIS_DIR) -> dict[str, dict]:
    """Every `<run>.json` of `basic analyze` in `analysis_dir` (none yet: empty); a bad file is an error naming it."""
    out = {}
    for path in sorted(Path(analysis_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ReportError(f"{path}: not valid JSON ({e})") from None
        missing = [
            k
            for k in ("summary", "setup", "layers", "replacement", "examples")
            if not isinstance(data, dict) or k not in data
        ]
        if missing:
            raise ReportError(f"{path}: not a `basic analyze` result (no {', '.join(missing)})")
        out[path.stem] = data
    return out


def analysis_rows(study: config.Study, runs: list[str]) -> dict[str, str]:
    """run -> row label: what the run is (method, LLM, encoder, k when not half); runs equal but for the seed share
    a row, and rows that would share a label but differ elsewhere are told apart by their first run."""
    labels, settings = {}, {}
    for name in runs:
        attrs = attributes(study.runs[name])
        label = f"{attrs['method']} {attrs['llm']} {attrs['encoder']}"
        if attrs["layers"] not in (None, "half"):
            label += f" k={attrs['layers']}"
        labels[name], settings[name] = label, json.dumps(study.runs[name].settings, sort_keys=True)
    for label in set(labels.values()):
        names = [n for n in runs if labels[n] == label]
        if len({settings[n] for n in names}) > 1:
            firsts = {}
            for n in names:
                firsts.setdefault(settings[n], n)
            for n in names:
                labels[n] = f"{label} [{firsts[settings[n]]}]"
    return labels


def analysis_frame(
    study: config.Study, analyses: dict[str, dict], runs: list[str] | None = None
) -> pd.DataFrame:
    """Long frame of the per-layer curves: run, row, seed, layer, reading (cosine | logit_lens), measure, value,
    for the analysed runs among `runs` (default: the runs `tables.analysis` names)."""
    runs = [r for r in dict.fromkeys(runs or study.tables.get(config.ANALYSIS_TABLE, [])) if r in analyses]
    rows = analysis_rows(study, runs)
    lines = []
    for name in runs:
        for layer in analyses[name]["layers"]:
            for reading in ("cosine", "logit_lens"):
                for measure in ANALYSIS_MEASURES:
                    value = layer[reading].get(measure)
                    if value is not None:
                        lines.append(
                            {
                                "run": name,
                                "row": rows[name],
                                "seed": study.runs[name].seed,
                                "layer": layer["layer"],
                                "reading": reading,
                                "measure": measure,
                                "value": value,
                            }
                        )
    return pd.DataFrame(lines, columns=["run", "row", "seed", "layer", "reading", "measure", "value"])


def _paper_count(refs: dict, run: config.Run) -> float | None:
    """The paper's meaningful initial embeddings (of 576) for a run of its own setting (LLaVA-1.5, or BASIC with
    the paper's choices: k half, increasing layer weights, attention patch weights, both losses)."""
    attrs, counts = attributes(run), refs["analysis"]["meaningful_initial_embeddings"]
    if attrs["method"] == config.BASELINE:
        return counts[config.BASELINE]
    paper = (
        attrs["das"]
        and attrs["sds"]
        and attrs["layers"] == "half"
        and attrs["layer_weights"] == "increasing"
        and attrs["patch_weights"] == "attention"
    )
    return counts[config.METHOD] if paper else None


ANALYSIS_COLUMNS = {  # summary key -> column of the analysis table
    "initial_meaningful_per_576": "meaningful initial / 576",
    "initial_grounded_fraction": "grounded initial",
    "peak_grounded_fraction": "grounded peak",
    "initial_eos_fraction": "eos initial",
    "last_layer_eos_fraction": "eos last layer",
    "replacement_exact_match": "replaced = real",
    "blank_exact_match": "blank = real",
}


def analysis_table(
    study: config.Study, analyses: dict[str, dict], refs: dict, runs: list[str] | None = None
) -> pd.DataFrame:
    """One line per row (setting) of the analysed runs: the seeds, images and patches, each summary number as mean
    and sd over the seeds (`<column>` and `<column> sd`), and the paper's meaningful initial count for its own
    settings (`paper / 576`)."""
    runs = [r for r in dict.fromkeys(runs or study.tables.get(config.ANALYSIS_TABLE, [])) if r in analyses]
    rows = analysis_rows(study, runs)
    lines = []
    for row in dict.fromkeys(rows[r] for r in runs):
        names = [r for r in runs if rows[r] == row]
        first = analyses[names[0]]["setup"]
        line: dict[str, Any] = {
            "row": row,
            "method": study.runs[names[0]].method,
            "llm": study.runs[names[0]].llm,
            "layers": attributes(study.runs[names[0]])["layers"],
            "seeds": len(names),
            "runs": ";".join(names),
            "images": first["images"],
            "patches": first["patches_per_image"],
            "llm_layers": first["llm_layers"],
        }
        for key, column in ANALYSIS_COLUMNS.items():
            values = [
                analyses[n]["summary"][key] for n in names if analyses[n]["summary"].get(key) is not None
            ]
            line[column], line[f"{column} sd"] = _mean_sd([float(v) for v in values])
        line["paper / 576"] = _paper_count(refs, study.runs[names[0]])
        lines.append(line)
    return pd.DataFrame(lines)


def _pm(mean: float | None, sd: float | None, digits: int) -> str:
    if mean is None or pd.isna(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None and pd.notna(sd) else "")


def analysis_markdown(table: pd.DataFrame) -> str:
    """The analysis table as Markdown: mean ± sd over seeds per setting, the paper's count beside ours."""
    head = ["row", "seeds", "images", *ANALYSIS_COLUMNS.values(), "paper / 576"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in table.itertuples(index=False):
        d = dict(zip(table.columns, line))
        cells = [d["row"], str(d["seeds"]), str(d["images"])]
        for column in ANALYSIS_COLUMNS.values():
            cells.append(_pm(d[column], d[f"{column} sd"], 1 if "576" in column else 3))
        cells.append(
            "" if d["paper / 576"] is None or pd.isna(d["paper / 576"]) else f"{d['paper / 576']:.0f}"
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_analysis_table(
    table: pd.DataFrame, out_dir: str | Path, name: str = "analysis"
) -> tuple[Path, Path]:
    """`<name>.csv` (every number, sd columns included) and `<name>.md` (`analysis_markdown`) in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / f"{name}.csv", out / f"{name}.md"
    table.to_csv(csv, index=False, float_format="%.6g")
    md.write_text(analysis_markdown(table), encoding="utf-8")
    return csv, md


def _delta(a: pd.Series, b: pd.Series, column: str) -> tuple[float, float | None]:
    """a - b of a column, and the standard error of that difference from the seed spreads (None: one seed)."""
    d = float(a[column]) - float(b[column])
    sa, sb = a[f"{column} sd"], b[f"{column} sd"]
    se = math.sqrt(sa**2 / a.seeds + sb**2 / b.seeds) if pd.notna(sa) and pd.notna(sb) else None
    return d, se


def _judged(d: float, se: float | None, digits: int) -> str:
    text = f"{d:+.{digits}f}"
    if se is None:
        return text + " (one seed: no spread to judge it by)"
    return (
        text
        + f" ({'beyond' if abs(d) > 2 * se else 'within'} twice its seed standard error, {se:.{digits}f})"
    )


def analysis_findings(table: pd.DataFrame, frame: pd.DataFrame, refs: dict) -> str:
    """What the analysis shows, computed from its table and curves (Markdown), beside the paper's statements:
    BASIC minus LLaVA-1.5 in meaningful and grounded initial embeddings (with the seed spread), how the shares
    move over the layers, the end token in the last layer, and the replacement test against its blank control."""
    counts = refs["analysis"]["meaningful_initial_embeddings"]
    lines = ["**What the embedding analysis shows** (cosine matches; mean over seeds):", ""]
    if table.empty:
        return "\n".join(lines + ["- no analysed run yet."]) + "\n"
    llava = table[table.method == config.BASELINE]
    for _, base in llava.iterrows():
        ours = table[(table.method == config.METHOD) & (table.llm == base.llm) & (table.layers == "half")]
        for _, row in ours.iterrows():
            d, se = _delta(row, base, "meaningful initial / 576")
            paper = counts[config.METHOD] - counts[config.BASELINE]
            text = (
                f"- {row.row} vs {base.row}: meaningful initial embeddings "
                f"{_pm(row['meaningful initial / 576'], None, 1)} vs {_pm(base['meaningful initial / 576'], None, 1)} "
                f"of 576, Δ {_judged(d, se, 1)}; paper {counts[config.METHOD]} vs {counts[config.BASELINE]}, "
                f"Δ {paper:+d}."
            )
            if pd.notna(row["grounded initial"]) and pd.notna(base["grounded initial"]):
                d, se = _delta(row, base, "grounded initial")
                text += f" Grounded initial embeddings: Δ {_judged(d, se, 3)}."
            lines.append(text)
    cosine = frame[frame.reading == "cosine"]
    for row, g in cosine.groupby("row", sort=False):
        mean = g.groupby(["measure", "layer"]).value.mean()
        layers = sorted(g.layer.unique())
        last, half = layers[-1], layers[len(layers) // 2]
        parts = []
        for measure in ("meaningful_fraction", "grounded_fraction"):
            if measure in mean.index.get_level_values(0):
                m = mean[measure]
                parts.append(
                    f"{measure.split('_')[0]} {m[0]:.3f} -> {m[half]:.3f} (layer {half}) -> {m[last]:.3f} "
                    f"(layer {last})"
                )
        eos = mean["eos_fraction"]
        parts.append(f"end token {eos[0]:.3f} -> {eos[last]:.3f}")
        lines.append(f"- {row}, over the layers: " + "; ".join(parts) + ".")
    for _, row in table.iterrows():
        replaced, blank = row["replaced = real"], row["blank = real"]
        d = replaced - blank
        # Binomial standard error of the difference of two shares over the same questions (unpaired: conservative).
        se = math.sqrt((replaced * (1 - replaced) + blank * (1 - blank)) / (row.images * row.seeds))
        verdict = (
            "more of the answer than a blank image does"
            if d > 2 * se
            else "less of the answer than a blank image does"
            if d < -2 * se
            else "no more of the answer than a blank image does, within twice the standard error"
        )
        lines.append(
            f"- {row.row}, replacement test: the answer with the matched tokens' embeddings equals the real "
            f"one for {replaced:.3f} of the questions, the answer with a blank image for {blank:.3f} "
            f"(Δ {d:+.3f}, standard error {se:.3f}): the matched tokens carry {verdict}."
        )
    lines += [
        "",
        (
            f"Paper ({refs['analysis']['images']} images): {counts[config.BASELINE]} / 576 meaningful initial "
            f"embeddings for LLaVA-1.5, {counts[config.METHOD]} / 576 for BASIC. {refs['analysis']['layers']}"
        ),
    ]
    return "\n".join(lines) + "\n"


def plot_analysis(frame: pd.DataFrame, reading: str = "cosine"):
    """Per-layer curves of the meaningful, grounded and end-token shares, one line per row (mean over seeds, band:
    sd), layer 0 being the initial embeddings."""
    import seaborn as sns

    data = frame[frame.reading == reading]
    measures = [m for m in ANALYSIS_MEASURES if m in set(data.measure)]
    grid = sns.relplot(
        data,
        x="layer",
        y="value",
        hue="row",
        col="measure",
        col_order=measures,
        kind="line",
        errorbar="sd",
        marker="o",
        facet_kws={"sharey": False},
        height=3.2,
        aspect=1.1,
    )
    grid.set_titles("{col_name}" + f" ({reading})")
    for ax in grid.axes.flat:
        ax.set_xlabel("layer (0: initial embeddings)")
    return grid.figure


def plot_patches(
    analysis: dict,
    images: int = 3,
    layers: list[int] | None = None,
    reading: str = "cosine",
    title: str | None = None,
):
    """Example images of one run with the matched token of every patch written on it (its first six characters;
    a token in another script as its first code point),
    one column per layer (default: initial, middle, last); with scene annotations (mini), the patches of an
    object or the sign are outlined in yellow."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from basic.mini.scenes import SIGN

    examples = analysis["examples"][:images]
    n_layers = analysis["setup"]["llm_layers"]
    layers = layers if layers is not None else sorted({0, max(1, n_layers // 2), n_layers})
    fig, axes = plt.subplots(
        len(examples), len(layers), figsize=(3.3 * len(layers), 3.5 * len(examples)), squeeze=False
    )
    for r, example in enumerate(examples):
        image = Image.open(io.BytesIO(base64.b64decode(example["image_png"]))).convert("RGB")
        grid = example["grid"]
        for c, layer in enumerate(layers):
            ax = axes[r][c]
            ax.imshow(image, extent=(0, grid, grid, 0), interpolation="nearest")
            tokens = example["matches"][reading][layer]
            for k, token in enumerate(tokens):
                shown = (
                    token[:6] if token.isascii() else f"U+{ord(token[0]):04X}"
                )  # the default font has no CJK
                ax.text(
                    k % grid + 0.5,
                    k // grid + 0.5,
                    shown,
                    ha="center",
                    va="center",
                    fontsize=max(3.5, 40 / grid),
                    color="black",
                    bbox={"boxstyle": "square,pad=0.05", "fc": "white", "alpha": 0.55, "lw": 0},
                )
            for x in range(grid + 1):
                ax.axhline(x, color="white", lw=0.3)
                ax.axvline(x, color="white", lw=0.3)
            for k, label in enumerate(example.get("labels") or []):
                if label >= 0 or label == SIGN:  # an object's index, or the sign
                    ax.add_patch(plt.Rectangle((k % grid, k // grid), 1, 1, fill=False, ec="gold", lw=0.8))
            ax.set_xticks([]), ax.set_yticks([])
            name = "initial" if layer == 0 else f"layer {layer}"
            ax.set_title(
                f"{name}" + (f"\nQ: {example['question'].splitlines()[0][:40]}" if c == 0 else ""), fontsize=8
            )
        axes[r][-1].set_xlabel(
            f"answer: {example['answer'][:30]!r}\nreplaced: {example['replaced_answer'][:30]!r}", fontsize=7
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------
# `basic report`


def show(table: pd.DataFrame, family: str | None = None) -> None:
    """Display the Markdown view and, for a table of the paper (or `vision`), its findings in a notebook (print
    elsewhere)."""
    said = vision_findings(table) if family == VISION else findings(table, family) if family else ""
    show_markdown(markdown(table, family) + ("\n" + said if said else ""))


def show_markdown(text: str) -> None:
    """Display Markdown in a notebook (print elsewhere)."""
    try:
        from IPython.display import Markdown, display

        display(Markdown(text))
    except ImportError:
        print(text)


def run_notebooks(
    notebooks: list[Path], out_dir: Path, parameters: dict[str, Any], kernel: str = KERNEL
) -> list[Path]:
    """Execute each notebook with papermill into `out_dir` and render it to HTML beside it."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, notebook in enumerate(notebooks, 1):
        target = out_dir / notebook.name
        print(f"basic report: [{i}/{len(notebooks)}] {notebook} -> {target}", flush=True)
        try:
            pm.execute_notebook(
                str(notebook),
                str(target),
                parameters=parameters,
                kernel_name=kernel,
                language="python",
                progress_bar=True,
                cwd=str(Path.cwd()),
            )
        except pm.PapermillExecutionError as e:
            raise ReportError(
                f"{notebook} failed in cell {e.exec_count} ({e.ename}: {e.evalue}); "
                f"the executed notebook with the error is {target}"
            ) from None
        html, _ = HTMLExporter().from_notebook_node(nbformat.read(str(target), as_version=4))
        target.with_suffix(".html").write_text(html, encoding="utf-8")
        written += [target, target.with_suffix(".html")]
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="basic report",
        description="Execute the result notebooks (papermill) and "
        "render them to HTML; they write the tables to results/tables/.",
    )
    p.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    p.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="folder of the notebook templates")
    p.add_argument("--out", type=Path, default=NOTEBOOKS_OUT, help="executed notebooks and their HTML")
    p.add_argument("--metrics", type=Path, default=config.METRICS_DIR)
    p.add_argument("--curves", type=Path, default=config.CURVES_DIR)
    p.add_argument("--analysis", type=Path, default=config.ANALYSIS_DIR, help="`basic analyze` results")
    p.add_argument("--tables", type=Path, default=TABLES_DIR)
    p.add_argument(
        "--kernel", default=KERNEL, help="Jupyter kernel (default %(default)s, installed with ipykernel)"
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these notebooks (names without .ipynb)")
    args = p.parse_args(argv)
    notebooks = sorted(args.notebooks.glob("*.ipynb"))
    if args.only:
        unknown = sorted(set(args.only) - {n.stem for n in notebooks})
        if unknown:
            print(f"basic report: no notebook {', '.join(unknown)} in {args.notebooks}", file=sys.stderr)
            return 2
        notebooks = [n for n in notebooks if n.stem in args.only]
    if not notebooks:
        print(f"basic report: no notebooks in {args.notebooks}", file=sys.stderr)
        return 2
    try:
        results = load(
            args.params, args.metrics
        )  # fail early, in this process, on a bad params.yaml or metrics file
        load_analysis(args.analysis)
        missing = missing_runs(results)
        if missing:
            print(
                f"basic report: {len(missing)} of {len(results.study.runs)} runs have no metrics yet "
                f"(shown as missing): {', '.join(missing)}",
                file=sys.stderr,
            )
        run_notebooks(
            notebooks,
            args.out,
            {
                "params_file": str(args.params),
                "metrics_dir": str(args.metrics),
                "curves_dir": str(args.curves),
                "tables_dir": str(args.tables),
                "analysis_dir": str(args.analysis),
            },
            args.kernel,
        )
    except (config.ConfigError, ReportError) as e:
        print(f"basic report: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
