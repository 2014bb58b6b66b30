"""benchmarks/llm_knowledge.py: the ScienceQA-style LLM documents it adds to a copy of the world."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("llm_knowledge", ROOT / "benchmarks" / "llm_knowledge.py")
llm_knowledge = importlib.util.module_from_spec(spec)
sys.modules["llm_knowledge"] = llm_knowledge
spec.loader.exec_module(llm_knowledge)


def test_documents_ask_the_mini_scienceqa_in_llava_prompt_and_are_deterministic():
    docs = llm_knowledge.knowledge_docs(60, seed=0, stream="t")
    assert docs == llm_knowledge.knowledge_docs(60, seed=0, stream="t")
    assert len(docs) == 60 and len({d["id"] for d in docs}) == 60
    kinds = {d["turns"][0]["kind"] for d in docs}
    assert {"sqa-Colors", "sqa-Geometry", "sqa-Geography"} <= kinds
    for doc in docs:
        (turn,) = doc["turns"]
        lines = turn["prompt"].splitlines()
        assert lines[-1] == "Answer with the option's letter from the given choices directly."
        options = {line[0]: line[3:] for line in lines if line[1:3] == ". "}
        assert turn["answer"] in options and doc["objects"] == 1
        if turn["kind"] == "sqa-Colors":  # the answer follows from the object's colour in the description
            warm = any(c in doc["description"] for c in (" red ", " orange ", " yellow "))
            assert options[turn["answer"]] == ("a warm color" if warm else "a cool color")


def test_world_copy_adds_the_documents_and_keeps_the_rest(tmp_path):
    data = tmp_path / "data"
    (data / "text").mkdir(parents=True)
    (data / "images").mkdir()
    for name in ("llm_train", "llm_eval"):
        (data / "text" / f"{name}.jsonl").write_text(json.dumps({"id": f"{name}-0"}) + "\n")
    out = tmp_path / "work" / "data" / "mini"
    llm_knowledge.world_copy(data, out, docs=5, seed=0)
    assert (out / "images").resolve() == (data / "images").resolve()
    train = [json.loads(line) for line in (out / "text" / "llm_train.jsonl").read_text().splitlines()]
    evaluation = (out / "text" / "llm_eval.jsonl").read_text().splitlines()
    assert len(train) == 6 and {"llm_train-0"} < {d["id"] for d in train} and len(evaluation) == 301
