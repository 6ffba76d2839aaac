"""BERT-family models for retrained IMP flows, and their training callback: a HuggingFace ``BertModel``
with a mean-pooled linear classifier (or ``BertForSequenceClassification``) built from the shipped all-MiniLM-L6-v2 checkpoint (its first layers,
its word embeddings restricted to a task vocabulary) or from a tiny random configuration, fine-tuned on the
token tasks of :mod:`rganalysis.train.text_tasks`.

What IMP prunes is what BERT-ticket studies prune (Chen et al. 2020): the six linear weights of every
encoder layer (query, key, value, attention output, intermediate, output); embeddings, LayerNorms,
biases, the pooler and the classifier are rewound and trained but never pruned (:func:`bert_prunable`).
Dropout is off in both builders, so a retrain depends only on its seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rganalysis.errors import InvalidParameterError
from rganalysis.train.masked import MaskedTrainer
from rganalysis.train.text_tasks import N_LABELS, TextTask, TokenVocab

__all__ = [
    "BERT_LINEAR",
    "POOLINGS",
    "BertMeanPooled",
    "bert_prunable",
    "bert_trainer",
    "minilm_classifier",
    "tiny_bert",
]

#: The pruned linear maps of one encoder layer (relative names).
BERT_LINEAR = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


def _config(**kw: Any) -> Any:
    from transformers import BertConfig

    kw.setdefault("hidden_dropout_prob", 0.0)
    kw.setdefault("attention_probs_dropout_prob", 0.0)
    return BertConfig(**kw)


class BertMeanPooled(nn.Module):
    """A HuggingFace ``BertModel`` (``.bert``, no pooler) whose last hidden states are averaged over the
    attention mask -- the pooling the sentence-transformers all-MiniLM-L6-v2 is trained with -- and a
    linear ``classifier``.  ``forward(input_ids, attention_mask, ...)`` returns logits (n, n_labels).

    (The [CLS] state of the checkpoint's first layers hardly depends on the sentence: its spread over
    sentences is 4e-4 after two layers, so ``BertForSequenceClassification`` starts from a constant
    feature; the mean-pooled state does not.)"""

    def __init__(self, config: Any):
        super().__init__()
        from transformers import BertModel

        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kw: Any
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.classifier((h * m).sum(1) / m.sum(1).clamp_min(1.0))


#: pooling -> classifier class: ``"mean"`` (:class:`BertMeanPooled`) or ``"cls"``
#: (``BertForSequenceClassification``: pooler on [CLS])
POOLINGS = ("mean", "cls")


def _classifier(config: Any, seed: int, pooling: str) -> nn.Module:
    from transformers import BertForSequenceClassification

    if pooling not in POOLINGS:
        raise InvalidParameterError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    torch.manual_seed(int(seed))
    model = BertMeanPooled(config) if pooling == "mean" else BertForSequenceClassification(config)
    return model.eval()


def tiny_bert(
    vocab_size: int,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 64,
    max_length: int = 32,
    n_labels: int = N_LABELS,
    seed: int = 0,
    pooling: str = "mean",
) -> nn.Module:
    """A randomly initialised ``BertForSequenceClassification`` (seeded): ``layers`` encoder layers of
    width ``hidden``, ``heads`` heads, feed-forward ``intermediate``, ``n_labels`` outputs, no dropout; ``pooling`` as :func:`minilm_classifier`."""
    cfg = _config(
        vocab_size=int(vocab_size),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_length,
        num_labels=n_labels,
    )
    return _classifier(cfg, seed, pooling)


def minilm_classifier(
    vocab: TokenVocab,
    *,
    layers: int = 2,
    n_labels: int = N_LABELS,
    seed: int = 0,
    path: str | Path | None = None,
    pooling: str = "mean",
) -> nn.Module:
    """``BertForSequenceClassification`` with the first ``layers`` encoder layers, the embeddings and the
    pooler of the all-MiniLM-L6-v2 checkpoint in ``path`` (default: the shipped one,
    :func:`rganalysis.demo.minilm_path`); its word embeddings are the rows ``vocab.ids`` (compact ids,
    :class:`~rganalysis.train.text_tasks.TokenVocab`), the classifier (``n_labels`` outputs) is a seeded
    random initialisation, dropout is off.  ``pooling``: ``"mean"`` (default, :class:`BertMeanPooled`, as
    the checkpoint was trained) or ``"cls"`` (``BertForSequenceClassification``, with the checkpoint's
    pooler).  The pre-trained weights are the rewind point of a BERT-ticket
    flow."""
    from safetensors.torch import load_file

    if path is None:
        from rganalysis.demo import minilm_path

        path = minilm_path()
    path = Path(path)
    base = json.loads((path / "config.json").read_text())
    if not 1 <= int(layers) <= int(base["num_hidden_layers"]):
        raise InvalidParameterError(f"layers must be in 1..{base['num_hidden_layers']}, got {layers}")
    keep = {k: base[k] for k in ("hidden_size", "num_attention_heads", "intermediate_size", "hidden_act")}
    keep.update(
        max_position_embeddings=base["max_position_embeddings"], type_vocab_size=base["type_vocab_size"]
    )
    cfg = _config(vocab_size=len(vocab), num_hidden_layers=int(layers), num_labels=n_labels, **keep)
    model = _classifier(cfg, seed, pooling)
    src = load_file(str(path / "model.safetensors"))
    src = {(k[5:] if k.startswith("bert.") else k): v for k, v in src.items()}
    sd = model.state_dict()
    new = {}
    for k in sd:
        if not k.startswith("bert."):
            continue  # the classifier head: random
        rel = k[5:]
        if rel.startswith("encoder.layer.") and int(rel.split(".")[2]) >= int(layers):
            continue
        if rel not in src:
            continue  # e.g. position_ids buffers of other transformers versions
        t = src[rel]
        if rel == "embeddings.word_embeddings.weight":
            t = t[torch.tensor(vocab.ids)]
        if tuple(t.shape) != tuple(sd[k].shape):
            raise InvalidParameterError(f"{k}: checkpoint shape {tuple(t.shape)}, model {tuple(sd[k].shape)}")
        new[k] = t.to(sd[k].dtype)
    model.load_state_dict(new, strict=False)
    return model.eval()


def bert_prunable(model: nn.Module) -> list[str]:
    """The parameter names IMP prunes in a BERT: every encoder layer's :data:`BERT_LINEAR` weights, in
    depth order."""
    names = [n for n, _ in model.named_parameters()]
    out = [
        n
        for n in names
        if ".encoder.layer." in n and n.endswith(".weight") and any(f".{r}.weight" in n for r in BERT_LINEAR)
    ]
    if not out:
        raise InvalidParameterError("no BERT encoder linear weights in the model (not a BERT?)")
    return out


def bert_trainer(
    model: nn.Module,
    task: TextTask,
    *,
    init: dict[str, torch.Tensor] | None = None,
    epochs: int = 3,
    lr: float = 1e-4,
    batch_size: int = 32,
    name: str | None = None,
) -> MaskedTrainer:
    """The training callback of a BERT-ticket flow on ``task``: Adam (``lr``, batches of ``batch_size``,
    ``epochs`` passes) from ``init`` (default: the model's current weights, the rewind point) with the
    pruned weights held at zero.  ``train(weights, masks, seed=0)`` as :class:`MaskedTrainer`."""
    init = model.state_dict() if init is None else init
    return MaskedTrainer(
        model, init, task, epochs=epochs, lr=lr, batch_size=batch_size, name=name or f"bert/{task.name}"
    )
