"""Table logic of basic.pipeline.report on small synthetic metrics (the committed results/ come from real runs only)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from basic.pipeline import config, report, stage
from conftest import PARAMS

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("vqav2", "gqa", "sqa_img", "mmb_en", "mmb_cn", "mmvet", "vizwiz", "textvqa")


def entry(score, status="scored"):
    return {
        "score": score if status == "scored" else None,
        "n": 10,
        "split": "test",
        "scored_by": "local",
        "status": status,
    }


def write_metrics(folder: Path, scores: dict[str, dict[str, float]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for run, per_bench in scores.items():
        (folder / f"{run}.json").write_text(
            json.dumps(
                {b: entry(s) if not isinstance(s, str) else entry(None, s) for b, s in per_bench.items()}
            )
        )
    return folder


@pytest.fixture
def results(tmp_path) -> report.Results:
    """The repository's study, with metrics for some runs: two seeds of each main setting, gemma's baseline absent."""
    flat = {b: 40.0 for b in BENCHES}
    scores = {
        "llava-vicuna-7b": {**flat, "vqav2": 50.0, "mmvet": "unscored"},
        "llava-vicuna-7b-seed1": {**flat, "vqav2": 52.0, "mmvet": "unscored"},
        "basic-vicuna-7b": {**flat, "vqav2": 54.0, "mmvet": "unscored"},
        "basic-vicuna-7b-seed1": {**flat, "vqav2": 58.0, "mmvet": "unscored"},
        "llava-vicuna-13b": flat,
        "basic-vicuna-13b": flat,
        "das-vicuna-7b": {**flat, "vqav2": 53.0},
        "sds-vicuna-7b": {**flat, "vqav2": 49.0},
        "basic-gemma-2b": {**flat, "mmb_en": 30.0},
        "basic-constant-vicuna-7b": {**flat, "vqav2": 51.0},
    }
    return report.Results(
        config.load(PARAMS), report.load_metrics(write_metrics(tmp_path / "m", scores)), report.references()
    )


def cell(table: pd.DataFrame, row: str, bench: str) -> pd.Series:
    match = table[(table.row == row) & (table.benchmark == bench)]
    assert len(match) == 1, (row, bench, list(table.row.unique()))
    return match.iloc[0]


def test_main_table_seeds_deltas_and_paper(results):
    table = report.family_table(results, "main")
    refs = report.references()["main"]
    # The paper's columns, then what the runs were also scored on (TextVQA is not in the paper's Table 1).
    assert list(dict.fromkeys(table.benchmark)) == refs["columns"] + ["textvqa"]
    assert table[table.benchmark == "textvqa"].paper.isna().all()
    assert list(dict.fromkeys(table.row)) == [
        f"{r['method']} {r['llm']} {r['encoder']}" for r in refs["rows"]
    ]
    base, ours = (
        cell(table, "llava-1.5 vicuna-7b clip-l-336", "vqav2"),
        cell(table, "basic vicuna-7b clip-l-336", "vqav2"),
    )
    assert (base.ours, base.seeds, ours.ours, ours.seeds) == (51.0, 2, 56.0, 2)
    assert base.ours_sd == pytest.approx(2**0.5) and ours.ours_sd == pytest.approx(8**0.5)
    assert ours.ours_delta == 5.0 and ours.delta_se == pytest.approx((2 / 2 + 8 / 2) ** 0.5)
    assert (ours.paper, ours.paper_delta) == (79.2, pytest.approx(0.7)) and pd.isna(base.ours_delta)
    assert ours.runs == "basic-vicuna-7b;basic-vicuna-7b-seed1"
    mmvet = cell(table, "basic vicuna-7b clip-l-336", "mmvet")
    assert (
        mmvet.status == "unscored" and pd.isna(mmvet.ours) and mmvet.seeds == 0
    )  # never a number it did not get
    thirteen = cell(table, "basic vicuna-13b clip-l-336", "gqa")
    assert (thirteen.ours, thirteen.seeds, thirteen.ours_delta) == (40.0, 1, 0.0) and pd.isna(
        thirteen.ours_sd
    )
    missing = cell(table, "llava-1.5 vicuna-13b clip-l-336", "gqa")
    assert missing.status == "scored"  # seed 0 present, seed1 missing: the mean is over what was scored
    assert report.missing_runs(results, "main") == ["llava-vicuna-13b-seed1", "basic-vicuna-13b-seed1"]


def test_loss_ablation_matches_rows_by_losses(results):
    table = report.family_table(results, "loss_ablation")
    assert list(dict.fromkeys(table.row)) == ["-DAS -SDS", "+DAS -SDS", "-DAS +SDS", "+DAS +SDS"]
    assert cell(table, "+DAS -SDS", "vqav2").ours_delta == 2.0
    assert cell(table, "-DAS +SDS", "vqav2").ours_delta == -2.0
    assert cell(table, "+DAS +SDS", "mmb_en").paper == 68.8


def test_cross_model_missing_and_not_run(results):
    table = report.family_table(results, "cross_model")
    gemma = cell(table, "clip-l-336 gemma-2b basic", "mmb_en")
    assert gemma.ours == 30.0 and gemma.paper == 55.8 and pd.isna(gemma.ours_delta)  # its baseline is missing
    assert cell(table, "clip-l-336 gemma-2b llava-1.5", "mmb_en").status == "missing"
    assert cell(table, "siglip vicuna-13b basic", "mmb_en").status == "missing"
    assert cell(table, "siglip vicuna-13b basic", "mmb_en").paper_delta == pytest.approx(1.3)
    # five paper rows x (LLaVA-1.5, BASIC) x (MMBench-EN + the seven other benchmarks gemma was scored on)
    assert len(table) == 80 and next(iter(dict.fromkeys(table.benchmark))) == "mmb_en"
    assert cell(table, "clip-l-336 gemma-2b basic", "vqav2").ours == 40.0
    assert pd.isna(cell(table, "clip-l-336 gemma-2b basic", "vqav2").paper)


def test_layer_weights_against_increasing(results):
    table = report.family_table(results, "layer_weights")
    assert list(dict.fromkeys(table.row)) == ["decreasing", "constant", "increasing"]
    assert cell(table, "constant", "vqav2").ours_delta == 51.0 - 56.0
    assert cell(table, "decreasing", "vqav2").status == "missing"
    assert cell(table, "constant", "vqav2").paper_delta == pytest.approx(-0.2)


def test_rows_the_paper_does_not_have(results, tmp_path):
    """A run that matches no paper row gets its own row; a paper row without runs is shown as not run."""
    raw = config.read(PARAMS)
    raw["runs"]["basic-lr-vicuna-7b"] = {
        "encoder": "clip-l-336",
        "llm": "vicuna-7b",
        "seed": 0,
        "basic": {"das_weight": 1.0, "sds_weight": 0.01},
        "finetune": {"learning_rate": 1.0e-4},
    }
    raw["runs"]["llava-siglip-gemma"] = {"encoder": "siglip", "llm": "gemma-2b", "seed": 0}
    raw["tables"]["main"] = ["basic-vicuna-7b", "basic-lr-vicuna-7b", "llava-siglip-gemma"]
    metrics = write_metrics(
        tmp_path / "m2",
        {
            "basic-vicuna-7b": {"vqav2": 50.0},
            "basic-lr-vicuna-7b": {"vqav2": 60.0},
            "llava-siglip-gemma": {"vqav2": 30.0},
        },
    )
    res = report.Results(config.parse(raw), report.load_metrics(metrics), report.references())
    table = report.family_table(res, "main")
    rows = list(dict.fromkeys(table.row))
    # Same paper row, different settings: two rows, told apart by their first run.
    assert rows[:3] == [
        "llava-1.5 vicuna-7b clip-l-336",
        "basic vicuna-7b clip-l-336 [basic-vicuna-7b]",
        "basic vicuna-7b clip-l-336 [basic-lr-vicuna-7b]",
    ]
    assert rows[-1] == "llava-1.5 gemma-2b siglip" and pd.isna(cell(table, rows[-1], "vqav2").paper)
    assert cell(table, "llava-1.5 vicuna-7b clip-l-336", "vqav2").status == "not run"
    assert cell(table, "basic vicuna-7b clip-l-336 [basic-lr-vicuna-7b]", "gqa").status == "not evaluated"


def test_markdown_and_files(results, tmp_path):
    table = report.family_table(results, "main")
    md = report.markdown(table, "main")
    assert md.startswith("**Table 1: main results**")
    assert "| basic vicuna-7b clip-l-336 | 2 | 56.0 ± 2.8 (+5.0) [79.2 (+0.7)] |" in md
    assert "| unscored [31.1] |" in md
    csv, written = report.write_table(table, tmp_path / "t", "main", "main")
    assert written.read_text() == md
    back = pd.read_csv(csv)
    assert list(back.columns[:4]) == ["row", "method", "llm", "encoder"] and len(back) == len(table)


def test_load_metrics_rejects_bad_files(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(report.ReportError, match="a.json: not valid JSON"):
        report.load_metrics(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"vqav2": 3}))
    with pytest.raises(report.ReportError, match="a.json: expected"):
        report.load_metrics(tmp_path)


def test_curves_from_trainer_state(tmp_path):
    history = [
        {
            "step": 1,
            "epoch": 0.5,
            "loss": 2.0,
            "lm_loss": 1.9,
            "das": 0.5,
            "sds": 0.1,
            "learning_rate": 1e-3,
            "grad_norm": 3.0,
        },
        {"step": 2, "epoch": 1.0, "loss": 1.5, "lm_loss": 1.45, "das": 0.3, "sds": 0.05},
        {"step": 2, "train_runtime": 3.2, "train_loss": 1.7},
    ]
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 2, "log_history": history}))
    out = stage.write_curves(state, tmp_path / "curves" / "basic-x" / "pretrain.json")
    points = json.loads(out.read_text())
    assert points == [{k: v for k, v in h.items()} for h in history[:2]]
    (tmp_path / "curves" / "llava-x").mkdir()
    (tmp_path / "curves" / "llava-x" / "finetune.json").write_text(
        json.dumps([{"step": 1, "loss": 3.0, "lm_loss": 3.0}])
    )
    curves = report.load_curves(tmp_path / "curves")
    assert set(curves.term) == {"loss", "lm_loss", "das", "sds"} and len(curves) == 10
    summary = report.curves_summary(curves)
    das = summary[(summary.run == "basic-x") & (summary.term == "das")].iloc[0]
    assert (das.points, das["first"], das["last"]) == (2, 0.5, 0.3)
    assert "| basic-x | pretrain | das | 2 | 0.5 | 0.3 |" in report.frame_markdown(summary)
    with pytest.raises(SystemExit, match="no trainer state"):
        stage.curves_from_state(tmp_path / "nope.json")


def test_figures_draw(results):
    import matplotlib

    matplotlib.use("Agg")
    fig = report.plot_family(report.family_table(results, "main"), report.seed_scores(results, "main"), "t")
    assert len(fig.axes) == 2 and fig.axes[0].patches


@pytest.mark.slow  # papermill executes the notebooks
def test_report_executes_a_notebook(results, tmp_path):
    """`basic report` runs a notebook with papermill on the named kernel and renders it to HTML."""
    metrics = write_metrics(tmp_path / "metrics", {"basic-vicuna-7b": {b: 50.0 for b in BENCHES}})
    code = report.main(
        [
            "--params",
            str(PARAMS),
            "--notebooks",
            str(ROOT / "notebooks"),
            "--metrics",
            str(metrics),
            "--curves",
            str(tmp_path / "curves"),
            "--tables",
            str(tmp_path / "tables"),
            "--out",
            str(tmp_path / "nb"),
            "--only",
            "main",
        ]
    )
    assert code == 0
    assert (
        "| basic vicuna-7b clip-l-336 | 1 | 50.0 [79.2 (+0.7)] | 50.0 [63.5 (+1.5)] |"
        in (tmp_path / "tables" / "main.md").read_text()
    )
    html = (tmp_path / "nb" / "main.html").read_text()
    assert "Table 1" in html and "data:image/png;base64" in html
    # Metrics without blind scores: the vision table is written all the same, and its findings say why it is empty.
    assert (
        "| basic vicuna-7b clip-l-336 | 0 | no blind score |"
        in (tmp_path / "tables" / "vision.md").read_text()
    )
    assert "no blind scores yet" in html
    assert report.main(["--params", str(PARAMS), "--notebooks", str(ROOT / "notebooks"), "--only", "x"]) == 2


def test_findings_state_deltas_spread_and_null_results(results):
    text = report.findings(report.family_table(results, "main"), "main")
    # vqav2: BASIC 56 vs 51 (seed sd sqrt 8 and sqrt 2 -> SE 2.2: beyond 2 SE? 5 > 4.5, yes); the rest flat at 40.
    assert (
        "- basic vicuna-7b clip-l-336: mean Δ +5.0 over 1 benchmarks (1 up, 0 down); 1 of 1 beyond twice"
        in text
    )
    assert "Paper, same benchmarks: mean Δ +0.7 (1 of 1 up)" in text
    assert "no signal on gqa, sqa_img, mmb_en, mmb_cn" in text and "(40.0, 40.0" in text
    ablation = report.findings(report.family_table(results, "loss_ablation"), "loss_ablation")
    assert "- +DAS -SDS: mean Δ +2.0 over 1 benchmarks (1 up, 0 down); one seed, so no spread" in ablation


def blind_entry(score: float, blind: float, same: float) -> dict:
    return {**entry(score), "blind_score": blind, "same_answer_blind": same, "distinct_answers": 5}


def test_vision_table_and_findings(tmp_path):
    """Score minus blind score per seed, mean ± sd over seeds; which benchmarks measure vision by the stated rule."""
    flat = {b: entry(40.0) for b in BENCHES}  # no blind keys: `no blind score`
    metrics = {
        "llava-vicuna-7b": {
            **flat,
            "vqav2": blind_entry(50.0, 30.0, 0.2),  # gap 20
            "gqa": blind_entry(40.0, 39.0, 0.9),  # gap 1
            "sqa_img": blind_entry(40.0, 35.0, 0.5),  # gap 5
        },
        "llava-vicuna-7b-seed1": {
            **flat,
            "vqav2": blind_entry(52.0, 28.0, 0.4),  # gap 24
            "gqa": blind_entry(40.0, 41.0, 0.7),  # gap -1
            "sqa_img": blind_entry(40.0, 25.0, 0.3),  # gap 15
        },
        "basic-vicuna-7b": {**flat, "vqav2": blind_entry(54.0, 30.0, 0.1)},  # gap 24
        "basic-vicuna-7b-seed1": {**flat, "vqav2": blind_entry(58.0, 30.0, 0.3)},  # gap 28
        "llava-vicuna-13b": {
            **flat,
            "vqav2": blind_entry(60.0, 30.0, 0.0),
            "mmb_en": blind_entry(45.0, 40.0, 0.6),
        },
    }
    folder = tmp_path / "m"
    folder.mkdir()
    for run, data in metrics.items():
        (folder / f"{run}.json").write_text(json.dumps(data))
    res = report.Results(config.load(PARAMS), report.load_metrics(folder), report.references())
    table = report.vision_table(res)
    assert list(dict.fromkeys(table.row)) == [
        "llava-1.5 vicuna-7b clip-l-336",
        "basic vicuna-7b clip-l-336",
        "llava-1.5 vicuna-13b clip-l-336",
        "basic vicuna-13b clip-l-336",
    ]
    base = cell(table, "llava-1.5 vicuna-7b clip-l-336", "vqav2")
    assert (base.ours, base.seeds, base.score, base.blind_score) == (22.0, 2, 51.0, 29.0)
    assert base.ours_sd == pytest.approx(8**0.5) and base.same_answer_blind == pytest.approx(0.3)
    ours = cell(table, "basic vicuna-7b clip-l-336", "vqav2")
    assert (ours.ours, ours.ours_delta) == (26.0, 4.0) and ours.ours_sd == pytest.approx(8**0.5)
    assert ours.delta_se == pytest.approx((8 / 2 + 8 / 2) ** 0.5) and pd.isna(ours.paper)
    gqa = cell(table, "llava-1.5 vicuna-7b clip-l-336", "gqa")
    assert gqa.ours == 0.0 and gqa.ours_sd == pytest.approx(2**0.5)
    thirteen = cell(table, "llava-1.5 vicuna-13b clip-l-336", "vqav2")
    assert (thirteen.ours, thirteen.seeds, thirteen.runs) == (30.0, 1, "llava-vicuna-13b") and pd.isna(
        thirteen.ours_sd
    )
    assert cell(table, "llava-1.5 vicuna-7b clip-l-336", "mmb_cn").status == "no blind score"
    assert cell(table, "basic vicuna-13b clip-l-336", "vqav2").status == "missing"
    md = report.markdown(table, report.VISION)
    assert md.startswith("**Table 1, with the image minus blind** (score minus blind score")
    assert "| basic vicuna-7b clip-l-336 | 2 | 26.0 ± 2.8 (+4.0) | no blind score |" in md
    csv, written = report.write_table(table, tmp_path / "t", "vision", report.VISION)
    assert written.read_text() == md and len(pd.read_csv(csv)) == len(table)
    text = report.vision_findings(table)
    assert (
        "above 2 points and above 2 sd, on every llava-1.5 row evaluated blind on two seeds or more" in text
    )
    # vqav2: 22 ± 2.8 on the judged (two-seed) row; gqa 0 ± 1.4; sqa_img 10 ± 7.1 (10 < 2 x 7.1).
    assert (
        "- measure vision: vqav2 (+22.0 ± 2.8 / +30.0); do not: gqa (+0.0 ± 1.4 / n/a), "
        "sqa_img (+10.0 ± 7.1 / n/a) (gaps of llava-1.5 vicuna-7b clip-l-336 / llava-1.5 vicuna-13b clip-l-336)."
    ) in text
    assert "- one blind seed only, undecided: mmb_en (n/a / +5.0)." in text
    assert "- no blind score: mmb_cn, mmvet, vizwiz, textvqa." in text


def test_vision_table_without_blind_scores(results, tmp_path):
    """Metrics written without --blind (the committed ones): every cell says so, the findings too, nothing breaks."""
    table = report.vision_table(results)
    assert len(table) == 4 * len(BENCHES) and table.ours.isna().all() and (table.seeds == 0).all()
    assert cell(table, "basic vicuna-7b clip-l-336", "vqav2").status == "no blind score"
    assert cell(table, "basic vicuna-7b clip-l-336", "mmvet").status == "unscored"
    # seed 0 scored without --blind, seed 1 missing: the scored seed decides
    assert cell(table, "basic vicuna-13b clip-l-336", "gqa").status == "no blind score"
    assert "| llava-1.5 vicuna-7b clip-l-336 | 0 | no blind score |" in report.markdown(table, report.VISION)
    assert "- no blind scores yet" in report.vision_findings(table)
    _, md = report.write_table(table, tmp_path, "vision", report.VISION)
    assert md.read_text().count("\n") == 4 + 4


def test_depth_table_rows_by_k(results, tmp_path):
    scores = {
        "llava-vicuna-7b": {"vqav2": 50.0},
        "basic-vicuna-7b": {"vqav2": 54.0},
        "basic-vicuna-7b-seed1": {"vqav2": 58.0},
        "basic-k1-vicuna-7b": {"vqav2": 57.0},
        "basic-k4-vicuna-7b": {"vqav2": 51.0},
    }
    res = report.Results(
        results.study, report.load_metrics(write_metrics(tmp_path / "m", scores)), report.references()
    )
    table = report.family_table(res, "depth")
    assert list(dict.fromkeys(table.row)) == ["k=half", "llava-1.5 (no BASIC)", "k=1", "k=3", "k=4"]
    assert list(dict.fromkeys(table.benchmark)) == ["vqav2"] and table.paper.isna().all()
    assert cell(table, "k=half", "vqav2").seeds == 2 and cell(table, "k=1", "vqav2").ours_delta == 1.0
    assert cell(table, "k=4", "vqav2").ours_delta == -5.0 and cell(table, "k=3", "vqav2").status == "missing"
    assert report.findings(table, "depth").startswith("**What Depth ablation shows** (Δ vs layers=half)")
    assert "k=4: mean Δ -5.0 over 1 benchmarks" in report.findings(table, "depth")
    # A study whose tables leave the depth ablation out (study.py --quick): an empty table, not an error.
    raw = config.read(PARAMS)
    raw["tables"] = {"main": raw["tables"]["main"], "analysis": raw["tables"]["main"]}
    empty = report.family_table(report.Results(config.parse(raw), res.metrics, res.references), "depth")
    assert empty.empty and report.markdown(empty, "depth").count("\n") == 4
    assert "no row has both" in report.findings(empty, "depth")
    import matplotlib

    matplotlib.use("Agg")
    assert report.plot_family(empty, None, "t").axes[0].texts[0].get_text() == "no scores yet"


def analysis_record(
    meaningful: float, grounded: float, eos_last: float, replaced: float, blank: float
) -> dict:
    """A `basic analyze` result with these numbers (4 LLM layers, an 8 x 8 grid, one example image)."""
    import base64
    import io

    from PIL import Image

    def stats(m, g, e):
        return {
            "meaningful_fraction": m,
            "eos_fraction": e,
            "grounded_fraction": g,
            "grounded_object_fraction": g,
            "grounded_background_fraction": g,
            "top_tokens": [["red", m]],
        }

    layers = [
        {
            "layer": i,
            "name": f"layer {i}",
            "cosine": stats(meaningful + 0.1 * i, grounded, eos_last * i / 4),
            "logit_lens": stats(meaningful, grounded, 0.0),
        }
        for i in range(5)
    ]
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(png, format="PNG")
    example = {
        "task": "mini_vqav2",
        "doc_id": 0,
        "question": "What color?\nAnswer.",
        "target": "red",
        "answer": "red",
        "replaced_answer": "red",
        "blank_answer": "blue",
        "grid": 8,
        "image_png": base64.b64encode(png.getvalue()).decode(),
        "labels": [0] * 8 + [-1] * 56,
        "matches": {r: [["red"] * 64 for _ in range(5)] for r in ("cosine", "logit_lens")},
    }
    summary = {
        "initial_meaningful_fraction": meaningful,
        "initial_meaningful_per_576": round(576 * meaningful, 2),
        "initial_eos_fraction": 0.0,
        "peak_meaningful_fraction": meaningful + 0.4,
        "peak_meaningful_layer": 4,
        "last_layer_eos_fraction": eos_last,
        "replacement_exact_match": replaced,
        "replacement_token_f1": replaced,
        "blank_exact_match": blank,
        "blank_token_f1": blank,
        "initial_grounded_fraction": grounded,
        "peak_grounded_fraction": grounded,
    }
    return {
        "summary": summary,
        "setup": {
            "checkpoint": "c",
            "profile": "mini",
            "tasks": "mini_vqav2",
            "images": 200,
            "patches_per_image": 64,
            "llm_layers": 4,
            "vocabulary": 900,
            "meaningful_tokens": 100,
            "eos_tokens": "</s>",
        },
        "layers": layers,
        "replacement": [{"task": "all", "questions": 200, "exact_match": replaced}],
        "examples": [example],
    }


def write_analysis(folder: Path, records: dict[str, dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for run, record in records.items():
        (folder / f"{run}.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def analyses(tmp_path) -> Path:
    return write_analysis(
        tmp_path / "analysis",
        {
            "llava-vicuna-7b": analysis_record(0.10, 0.02, 0.0, 0.40, 0.40),
            "llava-vicuna-7b-seed1": analysis_record(0.12, 0.04, 0.0, 0.42, 0.40),
            "basic-vicuna-7b": analysis_record(0.30, 0.10, 0.0, 0.80, 0.40),
            "basic-vicuna-7b-seed1": analysis_record(0.34, 0.12, 0.0, 0.82, 0.42),
            "basic-k4-vicuna-7b": analysis_record(0.05, 0.0, 0.9, 0.45, 0.44),
        },
    )


def test_analysis_table_curves_and_findings(results, analyses):
    study, refs = results.study, report.references()
    loaded = report.load_analysis(analyses)
    table = report.analysis_table(study, loaded, refs)
    assert list(table.row) == [
        "llava-1.5 vicuna-7b clip-l-336",
        "basic vicuna-7b clip-l-336",
        "basic vicuna-7b clip-l-336 k=4",
    ]
    base, basic, deep = (table.iloc[i] for i in range(3))
    assert base.seeds == 2 and base["meaningful initial / 576"] == pytest.approx(576 * 0.11)
    assert base["meaningful initial / 576 sd"] == pytest.approx(576 * 0.02 / 2**0.5)
    assert (base["paper / 576"], basic["paper / 576"]) == (74, 217) and pd.isna(deep["paper / 576"])
    assert deep["eos last layer"] == 0.9 and pd.isna(deep["eos last layer sd"])
    frame = report.analysis_frame(study, loaded)
    assert set(frame.reading) == {"cosine", "logit_lens"} and set(frame.layer) == {0, 1, 2, 3, 4}
    assert len(frame) == 5 * 5 * 2 * 3  # runs x layers x readings x measures
    md = report.analysis_markdown(table)
    assert "| basic vicuna-7b clip-l-336 | 2 | 200 | 184.3 ± 16.3 | 0.110 ± 0.014 |" in md
    text = report.analysis_findings(table, frame, refs)
    assert "meaningful initial embeddings 184.3 vs 63.4 of 576" in text
    assert "Δ +121.0 (beyond twice its seed standard error" in text and "paper 217 vs 74, Δ +143" in text
    assert "the matched tokens carry more of the answer than a blank image does" in text
    assert "end token 0.000 -> 0.900" in text  # the k=4 run, its last layer
    with pytest.raises(report.ReportError, match="bad.json: not a `basic analyze` result"):
        (analyses / "bad.json").write_text(json.dumps({"summary": {}}))
        report.load_analysis(analyses)


def test_analysis_figures_draw(results, analyses):
    import matplotlib

    matplotlib.use("Agg")
    loaded = report.load_analysis(analyses)
    fig = report.plot_analysis(report.analysis_frame(results.study, loaded))
    assert len(fig.axes) == 3
    fig = report.plot_patches(loaded["basic-vicuna-7b"], images=1)
    assert len(fig.axes) == 3 and fig.axes[0].texts[0].get_text() == "red"


@pytest.mark.slow  # papermill executes the notebooks
def test_report_executes_the_analysis_and_depth_notebooks(tmp_path, analyses):
    metrics = write_metrics(
        tmp_path / "metrics",
        {"basic-vicuna-7b": {b: 50.0 for b in BENCHES}, "basic-k1-vicuna-7b": {b: 45.0 for b in BENCHES}},
    )
    code = report.main(
        [
            "--params",
            str(PARAMS),
            "--notebooks",
            str(ROOT / "notebooks"),
            "--metrics",
            str(metrics),
            "--curves",
            str(tmp_path / "curves"),
            "--analysis",
            str(analyses),
            "--tables",
            str(tmp_path / "tables"),
            "--out",
            str(tmp_path / "nb"),
            "--only",
            "analysis",
            "depth",
        ]
    )
    assert code == 0
    assert "| basic vicuna-7b clip-l-336 | 2 | 200 |" in (tmp_path / "tables" / "analysis.md").read_text()
    assert "| k=1 | 1 | 45.0 (-5.0) |" in (tmp_path / "tables" / "depth.md").read_text()
    html = (tmp_path / "nb" / "analysis.html").read_text()
    assert "What the embedding analysis shows" in html and html.count("data:image/png;base64") >= 3
    assert "deep-layer embeddings is detrimental" in (tmp_path / "nb" / "depth.html").read_text()
