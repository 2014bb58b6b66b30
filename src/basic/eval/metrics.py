"""The benchmarks' scoring rules as pure functions: VQA accuracy, option-letter extraction, circular evaluation.

Each follows the rule its real benchmark is scored by, so the mini benchmarks and the full study measure the
same thing:
- `normalise_answer`: the answer normalisation of the EvalAI VQA servers, which LLaVA-1.5 also applies to
  its answers before it writes a VQAv2 or VizWiz submission (`scripts/convert_vqav2_for_submission.py`):
  written here from its documented behaviour, quirks included (see the function).
- `vqa_accuracy`: VQAv2 / VizWiz / TextVQA accuracy over ten human answers, min(1, matches / 3) averaged over
  the ten leave-one-out subsets, after that normalisation.
- `gqa_match`: GQA's exact match after LLaVA-1.5's post-processing (`scripts/convert_gqa_for_eval.py`:
  trailing periods stripped, lower case); `gqa_match_lmms_eval`: lmms-eval's (case and punctuation ignored).
- `sqa_letter`: ScienceQA's option letter as LLaVA's `eval_science_qa.py` parses it ("B", "B. text",
  "The answer is B."); anything else is wrong (never a random guess). `sqa_letter_lmms_eval`: lmms-eval's rule.
- `mmbench_letter`: MMBench's rule-based matching (`can_infer`: a single option letter in the answer, else a
  single option whose text appears in it); `None` means the rule cannot decide.
- `circular_accuracy`: MMBench's CircularEval: a question counts only if every rotation of its options
  (rows `index + k * 1_000_000`) is answered correctly.
"""

from __future__ import annotations

import re
import statistics
import string
from collections.abc import Iterable, Mapping

CIRCULAR_OFFSET = 1_000_000

# ---- EvalAI's VQA answer normalisation ----------------------------------------------------------------

# Characters the processor drops (when they touch a space, or when the text holds a digit group like
# "1,000") or else turns into a space. Periods are handled apart.
_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")
# A period not followed by a digit ("3.5" keeps its point). The reference processor meant to keep a point
# after a digit too, but its look-behind is malformed, so "3." loses it: reproduced here. It also passes
# re.UNICODE (32) where re.sub expects a count, so at most 32 periods go: reproduced as well.
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_LIMIT = 32
_NUMBERS = {
    w: str(i)
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    )
}
_NUMBERS["none"] = "0"
_ARTICLES = frozenset({"a", "an", "the"})
# The processor restores contractions written without their apostrophe. Its table lists, for each form
# below, every spelling with exactly one of the apostrophes left out ("dont" -> "don't", "hed've" and
# "he'dve" -> "he'd've"); a few forms that are also plain words ("shed", "well", "its", ...) are not in it.
_CONTRACTED = [
    "ain't",
    "aren't",
    "can't",
    "could've",
    "couldn't",
    "couldn't've",
    "didn't",
    "doesn't",
    "don't",
    "hadn't",
    "hadn't've",
    "hasn't",
    "haven't",
    "he'd",
    "he'd've",
    "he's",
    "how'd",
    "how'll",
    "how's",
    "isn't",
    "it'd",
    "it'd've",
    "it'll",
    "ma'am",
    "mightn't",
    "mightn't've",
    "might've",
    "mustn't",
    "must've",
    "needn't",
    "not've",
    "o'clock",
    "oughtn't",
    "'ow's'at",
    "shan't",
    "she'd've",
    "should've",
    "shouldn't",
    "shouldn't've",
    "somebody'd've",
    "somebody'll",
    "somebody's",
    "someone'd",
    "someone'd've",
    "someone'll",
    "someone's",
    "something'd",
    "something'd've",
    "something'll",
    "that's",
    "there'd",
    "there'd've",
    "there're",
    "there's",
    "they'd",
    "they'd've",
    "they'll",
    "they're",
    "they've",
    "'twas",
    "wasn't",
    "we'd've",
    "we've",
    "weren't",
    "what'll",
    "what're",
    "what's",
    "what've",
    "when's",
    "where'd",
    "where's",
    "where've",
    "who'd",
    "who'd've",
    "who'll",
    "who's",
    "who've",
    "why'll",
    "why're",
    "why's",
    "won't",
    "would've",
    "wouldn't",
    "wouldn't've",
    "y'all",
    "y'all'll",
    "y'all'd've",
    "you'd",
    "you'd've",
    "you'll",
    "you're",
    "you've",
]


def _one_apostrophe_less(word: str) -> list[str]:
    return [word[:i] + word[i + 1 :] for i, c in enumerate(word) if c == "'"]


_CONTRACTIONS = {spelling: word for word in _CONTRACTED for spelling in _one_apostrophe_less(word)}
# One entry of the reference table maps the other way round; kept, since it changes what is submitted.
_CONTRACTIONS["somebody'd"] = "somebodyd"


def normalise_answer(text: str) -> str:
    """EvalAI's VQA answer normalisation (the answer processor of the VQA challenge servers, which
    LLaVA-1.5 applies before submission). In order:

    1. lower case; "," and "?" removed; "'s" split off as " 's"; newlines and tabs become spaces;
    2. each character of `;/[]"{}()=+\\_-><@`,?!` is removed where it touches a space (or anywhere, when the
       text holds a digit group such as "1,000"), else replaced by a space;
    3. periods not followed by a digit are removed;
    4. per word: number words zero..ten (and "none") become digits, the articles a/an/the are dropped,
       contractions written without their apostrophe are restored ("dont" -> "don't");
    5. words joined by single spaces.
    """
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    drop = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for char in _PUNCTUATION:
        out = out.replace(char, "" if drop or f"{char} " in text or f" {char}" in text else " ")
    out = _PERIOD.sub("", out, count=_PERIOD_LIMIT)
    words = [_NUMBERS.get(w, w) for w in out.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy of `prediction` against the human `answers` (ten for VQAv2/VizWiz/TextVQA), in [0, 1]."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one reference answer")
    pred = normalise_answer(prediction)
    refs = [normalise_answer(a) for a in answers]
    return statistics.mean(
        min(1.0, sum(ref == pred for j, ref in enumerate(refs) if j != i) / 3) for i in range(len(refs))
    )


def sqa_letter(prediction: str, n_choices: int) -> str | None:
    """The option letter a ScienceQA answer gives, parsed as LLaVA does; None when it gives none."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n_choices]
    text = prediction.strip()
    if text in letters:
        return text
    if len(text) >= 3 and text[0] in letters and text[1:3] == ". ":
        return text[0]
    found = re.findall(r"The answer is ([A-Z]).", text)  # LLaVA's pattern: "." is any character there
    if len(found) == 1 and found[0] in letters:
        return found[0]
    return None


def sqa_letter_lmms_eval(prediction: str, n_choices: int) -> str | None:
    """The option letter lmms-eval's scienceqa task reads: the whole answer, or the capital before a "."."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n_choices]
    text = prediction.strip()
    if len(text) == 1 and text.upper() in letters:
        return text.upper()
    if len(text) >= 2 and text[0].isupper() and text[1] == "." and text[0] in letters:
        return text[0]
    return None


def gqa_match(prediction: str, answer: str) -> bool:
    """GQA's exact match after LLaVA-1.5's post-processing: trailing periods stripped, lower case."""
    return prediction.strip().rstrip(".").lower() == answer


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def gqa_match_lmms_eval(prediction: str, answer: str) -> bool:
    """lmms-eval's exact match with `ignore_case` and `ignore_punctuation` (every ASCII punctuation mark)."""
    return prediction.lower().translate(_NO_PUNCTUATION) == answer.lower().translate(_NO_PUNCTUATION)


_LETTER_FORMS = [
    ("", ""),
    ("", "."),
    ("", ","),
    ("", ":"),
    ("", ")"),
    ("", ")."),
    ("(", ")"),
    ("(", ")."),
    (":", ""),
    (":", ","),
    (":", "."),
    (":", ")"),
    (":", ")."),
]


def mmbench_letter(prediction: str, options: Mapping[str, str]) -> str | None:
    """MMBench's rule-based answer matching; `options` maps letters to option texts. None: undecided."""
    words = prediction.split()
    letters = "ABCDE"
    for prefix, suffix in _LETTER_FORMS:
        hits = [c for c in letters if prefix + c + suffix in words]
        # A bare "A" in a longer answer may be the article, as MMBench's own rule assumes.
        if len(hits) == 1 and not (prefix == suffix == "" and "A" in words and len(words) > 3):
            return hits[0]
    lowered = prediction.lower()
    hits = [k for k, text in options.items() if str(text).lower() in lowered]
    return hits[0] if len(hits) == 1 else None


def circular_accuracy(records: Iterable[Mapping]) -> float:
    """CircularEval accuracy in [0, 1] over records with `index`, `answer` (letter) and `pred` (letter or None)."""
    groups: dict[int, bool] = {}
    for r in records:
        key = int(r["index"]) % CIRCULAR_OFFSET
        groups[key] = groups.get(key, True) and r["pred"] == r["answer"]
    if not groups:
        raise ValueError("circular accuracy of no records")
    return sum(groups.values()) / len(groups)
