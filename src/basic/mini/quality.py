"""Quality of the mini backbones, measured on held-out data: LLM text-QA accuracy, encoder linear probes.

- `text_qa_accuracy`: a question about a held-out scene description counts as correct when greedy
  decoding reproduces the answer and then the end-of-turn token. Computed in one teacher-forced pass
  (greedy decoding emits exactly the reference iff the argmax at every reference position is the
  reference token), with the plain `model(input_ids).logits` a user would call.
- `linear_probe`: a multinomial logistic regression on the vision tower's mean-pooled patch features
  from the layer LLaVA feeds the projector (penultimate), fit on one held-out set, scored on another.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from transformers import PreTrainedModel

from basic.mini.llms import Encoded, collate


@torch.no_grad()
def text_qa_accuracy(model: PreTrainedModel, items: list[Encoded], pad_id: int, batch_size: int = 64) -> dict:
    """Exact-match accuracy of greedy answers: overall, per question kind, prompt style, language and number
    of objects."""
    model.eval()
    hits: dict[str, list[bool]] = defaultdict(list)
    order = sorted(range(len(items)), key=lambda i: len(items[i].ids))
    for b in range(0, len(order), batch_size):
        batch = [items[i] for i in order[b : b + batch_size]]
        ids, rows, cols, targets = collate(batch, pad_id)
        predicted = model(input_ids=ids).logits[rows, cols].argmax(-1)
        correct = (predicted == targets).tolist()
        start = 0
        for it in batch:
            n = len(it.targets)
            ok = all(correct[start : start + n])
            start += n
            hits["all"].append(ok)
            hits[f"lang/{it.lang}"].append(ok)
            hits[f"kind/{it.kinds[0]}"].append(ok)
            hits[f"style/{it.styles[0]}"].append(ok)
            hits[f"objects/{it.objects}"].append(ok)
    return {key: {"accuracy": float(np.mean(v)), "n": len(v)} for key, v in sorted(hits.items())}


def _standardise(train: torch.Tensor, test: torch.Tensor):
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    classes: int,
    steps: int = 300,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> float:
    """Test accuracy of a linear classifier (L-BFGS on cross-entropy + L2) fit on the training features."""
    train_x, test_x = _standardise(train_x.float(), test_x.float())
    torch.manual_seed(seed)
    probe = torch.nn.Linear(train_x.shape[1], classes)
    opt = torch.optim.LBFGS(
        probe.parameters(), lr=0.5, max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(train_x), train_y)
        loss = loss + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (probe(test_x).argmax(-1) == test_y).sum().item() / len(test_y)  # exact: 720/800 is 0.9
