"""Small real token tasks, made here from a fixed grammar (nothing downloaded), tokenized by a real BERT
tokenizer (by default the shipped all-MiniLM-L6-v2's WordPiece vocabulary).

The grammar (every word a single WordPiece token of the uncased BERT vocabulary)::

    sentence  := "the" NOUN VERB [NEGATION] [INTENSIFIER] ADJECTIVE [FILLER]
    NOUN      := one of TOPICS[topic]          (4 topics x 5 nouns)
    VERB      := "was" | "is" | "seems" | "looks"
    NEGATION  := "not" | "never"               (present with probability 1/2 where a task negates)
    INTENSIFIER := "very" | "really" | "quite" | "so"   (probability 1/2)
    ADJECTIVE := one of POSITIVE | NEGATIVE    (8 words each)
    FILLER    := "today" | "again" | "overall" | "indeed"  (probability 1/2)

The tasks (:data:`TEXT_TASKS`; every task has labels in 0..3 so one 4-way classifier head serves all,
as the digits tasks share one 10-way head):

* ``sentiment``: the polarity of the sentence, negation included (label 1 = positive: a positive
  adjective without negation or a negative one with it);
* ``sentiment-plain``: the same sentences without negation (label = the adjective's polarity);
* ``negation``: whether the sentence is negated (polarity and topic random);
* ``topic``: which of the 4 topics its noun belongs to (labels 0..3, negation and polarity random).

Sentences are drawn with a numpy generator seeded by (seed, task name); the test sentences are new draws that do not occur in
the training set.  Tokenization pads every sentence to the longest one of the task (``[CLS] ... [SEP]``,
attention mask 0 on padding); :class:`TokenVocab` maps the tokenizer's ids onto a compact vocabulary of
the ids the grammar uses, so a model needs only those rows of its word embeddings.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rganalysis.errors import InvalidParameterError

__all__ = [
    "NEGATIVE",
    "POSITIVE",
    "TEXT_TASKS",
    "TOPICS",
    "TextTask",
    "TokenVocab",
    "grammar_words",
    "load_tokenizer",
    "make_text_tasks",
    "sentences",
]

TOPICS: dict[str, tuple[str, ...]] = {
    "sports": ("game", "match", "team", "coach", "race"),
    "tech": ("phone", "laptop", "app", "software", "screen"),
    "food": ("meal", "pizza", "soup", "dinner", "cake"),
    "travel": ("trip", "hotel", "flight", "beach", "city"),
}
POSITIVE = ("good", "great", "excellent", "wonderful", "nice", "fun", "lovely", "amazing")
NEGATIVE = ("bad", "terrible", "awful", "boring", "poor", "horrible", "dull", "weak")
_VERBS = ("was", "is", "seems", "looks")
_NEGATIONS = ("not", "never")
_INTENSIFIERS = ("very", "really", "quite", "so")
_FILLERS = ("today", "again", "overall", "indeed")

#: task name -> (sentences negated with probability 1/2?, what the label is)
TEXT_TASKS: dict[str, tuple[bool, str]] = {
    "sentiment": (True, "polarity"),
    "sentiment-plain": (False, "polarity"),
    "negation": (True, "negated"),
    "topic": (True, "topic"),
}

#: labels of every task lie in 0 .. N_LABELS - 1
N_LABELS = 4


def grammar_words() -> list[str]:
    """Every word the grammar can produce, in a fixed order."""
    words = ["the", *_VERBS, *_NEGATIONS, *_INTENSIFIERS, *POSITIVE, *NEGATIVE, *_FILLERS]
    for nouns in TOPICS.values():
        words += nouns
    return words


def sentences(task: str, n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """``n`` sentences of ``task`` drawn from the grammar with ``rng``, and their labels (n,) int64."""
    if task not in TEXT_TASKS:
        raise InvalidParameterError(f"unknown text task {task!r}; known: {sorted(TEXT_TASKS)}")
    negates, what = TEXT_TASKS[task]
    topics = list(TOPICS)
    out, labels = [], []
    for _ in range(int(n)):
        t = int(rng.integers(len(topics)))
        pos = bool(rng.integers(2))
        neg = negates and bool(rng.integers(2))
        words = ["the", TOPICS[topics[t]][rng.integers(5)], _VERBS[rng.integers(len(_VERBS))]]
        if neg:
            words.append(_NEGATIONS[rng.integers(2)])
        if rng.integers(2):
            words.append(_INTENSIFIERS[rng.integers(len(_INTENSIFIERS))])
        adjs = POSITIVE if pos else NEGATIVE
        words.append(adjs[rng.integers(len(adjs))])
        if rng.integers(2):
            words.append(_FILLERS[rng.integers(len(_FILLERS))])
        out.append(" ".join(words))
        labels.append({"polarity": int(pos != neg), "negated": int(neg), "topic": t}[what])
    return out, np.asarray(labels, dtype=np.int64)


def load_tokenizer(path: str | Path | None = None) -> Any:
    """The HuggingFace tokenizer of the folder ``path`` (default: the shipped all-MiniLM-L6-v2,
    :func:`rganalysis.demo.minilm_path`)."""
    from transformers import AutoTokenizer

    if path is None:
        from rganalysis.demo import minilm_path

        path = minilm_path()
    return AutoTokenizer.from_pretrained(str(path))


@dataclass
class TokenVocab:
    """The tokenizer ids a model keeps, in order: compact id ``i`` is tokenizer id ``ids[i]``.

    Compact id 0 is the padding token, so a compact BERT can keep ``pad_token_id = 0``."""

    ids: list[int]

    @classmethod
    def for_grammar(cls, tokenizer: Any) -> TokenVocab:
        """The special tokens ([PAD], [CLS], [SEP], [UNK]) and every token of the grammar's words."""
        special = [
            tokenizer.pad_token_id,
            tokenizer.cls_token_id,
            tokenizer.sep_token_id,
            tokenizer.unk_token_id,
        ]
        ids = list(dict.fromkeys(special))
        for w in grammar_words():
            for i in tokenizer(w, add_special_tokens=False)["input_ids"]:
                if i not in ids:
                    ids.append(i)
        return cls(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def compact(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Tokenizer ids -> compact ids (a named error for an id outside the vocabulary)."""
        lut = torch.full((max(self.ids) + 1,), -1, dtype=torch.long)
        lut[torch.tensor(self.ids)] = torch.arange(len(self.ids))
        if int(token_ids.max()) >= lut.numel() or bool((lut[token_ids] < 0).any()):
            raise InvalidParameterError("a token id is outside the compact vocabulary")
        return lut[token_ids]


@dataclass
class TextTask:
    """One tokenized task: ``x_train`` / ``x_test`` dicts of ``input_ids`` and ``attention_mask`` (n, L)
    int64 (compact ids), labels ``y_train`` / ``y_test`` (n,) int64, and the sentences themselves."""

    name: str
    x_train: dict[str, torch.Tensor]
    y_train: torch.Tensor
    x_test: dict[str, torch.Tensor]
    y_test: torch.Tensor
    text_train: list[str]
    text_test: list[str]


def make_text_tasks(
    names: Sequence[str] = tuple(TEXT_TASKS),
    *,
    n_train: int = 512,
    n_test: int = 256,
    seed: int = 0,
    tokenizer: Any = None,
    vocab: TokenVocab | None = None,
) -> dict[str, TextTask]:
    """The tasks ``names`` of :data:`TEXT_TASKS`: ``n_train`` training and ``n_test`` test sentences each
    (test sentences never seen in training), tokenized by ``tokenizer`` (default :func:`load_tokenizer`)
    onto ``vocab`` (default :meth:`TokenVocab.for_grammar`)."""
    tok = load_tokenizer() if tokenizer is None else tokenizer
    voc = TokenVocab.for_grammar(tok) if vocab is None else vocab
    out = {}
    for name in names:
        rng = np.random.default_rng([int(seed), zlib.crc32(name.encode()), 22])  # by name, not position
        tr, ytr = sentences(name, n_train, rng)
        seen = set(tr)
        te, yte = [], []
        while len(te) < n_test:
            s, lab = sentences(name, 4 * n_test, rng)
            for a, b in zip(s, lab, strict=True):
                if a not in seen and len(te) < n_test:
                    te.append(a)
                    yte.append(int(b))
                    seen.add(a)
        enc = tok(tr + te, padding="longest", return_tensors="pt")
        ids = voc.compact(enc["input_ids"].long())
        att = enc["attention_mask"].long()
        n = len(tr)
        out[name] = TextTask(
            name,
            {"input_ids": ids[:n], "attention_mask": att[:n]},
            torch.from_numpy(ytr),
            {"input_ids": ids[n:], "attention_mask": att[n:]},
            torch.tensor(yte, dtype=torch.int64),
            tr,
            te,
        )
    return out
