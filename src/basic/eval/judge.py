"""MM-Vet judges behind one interface: `judge.score(question, answer, prediction) -> float in [0, 1]`.

- `LLMJudge` (full study): MM-Vet's grader, the benchmark's few-shot prompt sent to an OpenAI-compatible
  model through lmms-eval's judge providers, configured by the environment variables lmms-eval reads:
  `API_TYPE` (openai | azure | ...), `MODEL_VERSION` (default gpt-4o-2024-11-20, lmms-eval's default),
  `OPENAI_API_KEY` / `OPENAI_API_URL` (or `AZURE_API_KEY` / `AZURE_ENDPOINT` / `API_VERSION`).
- `RuleJudge` (mini MM-Vet): deterministic, offline; scores the ground truth's `<AND>` / `<OR>` syntax by
  which answer elements appear in the prediction.

A judge that cannot score raises `JudgeError` with the reason. The caller records the sample as
unjudged, and the benchmark as unscored; lmms-eval's own MM-Vet writes 0.0 for such a sample instead.
"""

from __future__ import annotations

import os
import re
from typing import Protocol

# MM-Vet's grading prompt (the benchmark's official GPT grader, as lmms-eval's `mmvet` task sends it).
MM_VET_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.
gpt_query_prompt | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""
DEFAULT_JUDGE_MODEL = "gpt-4o-2024-11-20"


class JudgeError(RuntimeError):
    """The judge cannot score (unreachable, not configured, or no usable reply); the reason is the message."""


class Judge(Protocol):
    name: str

    def score(self, question: str, answer: str, prediction: str) -> float: ...


def mmvet_query(question: str, answer: str, prediction: str) -> str:
    """The grader query for one sample: the few-shot table plus this sample's unfinished row."""
    truth = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return f"{MM_VET_PROMPT}\n{question} | {truth} | {prediction} |"


class RuleJudge:
    """Deterministic MM-Vet grading: the share of `<AND>` elements present, any `<OR>` element, or the answer."""

    name = "rule"

    @staticmethod
    def _words(text: str) -> str:
        return " " + " ".join(re.findall(r"\w+", text.lower())) + " "

    def score(self, question: str, answer: str, prediction: str) -> float:
        said = self._words(prediction)

        def present(element: str) -> bool:  # as whole words, in any case
            return self._words(element) in said

        if "<AND>" in answer:
            elements = [e for e in answer.split("<AND>") if e.strip()]
            return sum(map(present, elements)) / len(elements)
        return float(any(present(e) for e in answer.split("<OR>") if e.strip()))


class LLMJudge:
    """MM-Vet's GPT grader through lmms-eval's judge providers, configured from the environment."""

    def __init__(self, api_type: str | None = None, model: str | None = None, retries: int = 3) -> None:
        self.api_type = api_type or os.getenv("API_TYPE", "openai")
        self.model = model or os.getenv("MODEL_VERSION", DEFAULT_JUDGE_MODEL)
        self.name = f"{self.api_type}:{self.model}"
        self.retries = retries
        self._server = None
        self._failure: str | None = None  # once unreachable, later samples fail at once with the same reason

    def _ask(self, prompt: str) -> str:
        if self._failure:
            raise JudgeError(self._failure)
        try:
            from lmms_eval.llm_judge import Request, ServerConfig, get_server

            config = ServerConfig(
                model_name=self.model,
                temperature=0.0,
                max_tokens=128,
                num_retries=self.retries,
                retry_delay=1.0,
                timeout=60,
            )
            if self._server is None:
                self._server = get_server(self.api_type, config)
            reply = self._server.evaluate(
                Request(messages=[{"role": "user", "content": prompt}], config=config)
            )
        except Exception as error:  # any provider failure means: this judge cannot be reached
            self._failure = f"judge {self.name} unreachable: {type(error).__name__}: {error}"
            raise JudgeError(self._failure) from error
        return (reply.content or "").strip()

    def score(self, question: str, answer: str, prediction: str) -> float:
        reply = self._ask(mmvet_query(question, answer, prediction))
        try:
            value = float(reply.split()[0])
        except (IndexError, ValueError):
            raise JudgeError(f"judge {self.name} gave no score: {reply[:80]!r}") from None
        if not 0.0 <= value <= 1.0:
            raise JudgeError(f"judge {self.name} gave a score outside [0, 1]: {reply[:80]!r}")
        return value

    def check(self) -> str | None:
        """None when the judge answers a trivial request, else the reason it cannot be used."""
        try:
            self._ask("Reply with the number 1.0 and nothing else.")
        except JudgeError as error:
            return str(error)
        return None


def get_judge(name: str) -> Judge:
    """`rule` or `llm` (configured from the environment); unknown names are an error."""
    if name == "rule":
        return RuleJudge()
    if name == "llm":
        return LLMJudge()
    raise ValueError(f"unknown MM-Vet judge {name!r}; known: rule, llm")
