"""A language model's output layer tied to its input embedding is one set of weights: ingested, it is kept
bit for bit but not pruned on its own (a global prune would otherwise rank those weights twice)."""

from __future__ import annotations

import pytest
import torch

import rganalysis
from rganalysis.store.parameter_set import build_info

transformers = pytest.importorskip("transformers")


def _mlm_folder(path, copies: bool):
    cfg = transformers.BertConfig(
        vocab_size=97, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(cfg)
    path.mkdir()
    cfg.save_pretrained(path)
    sd = model.state_dict()
    if copies:  # the tie saved as two separate copies of the same bits
        sd = {k: v.clone() for k, v in sd.items()}
    torch.save(sd, path / "pytorch_model.bin")
    return sd


@pytest.mark.parametrize("copies", [False, True])
def test_tied_decoder_is_kept_but_not_pruned_twice(tmp_path, copies):
    sd = _mlm_folder(tmp_path / "mlm", copies)
    assert torch.equal(sd["cls.predictions.decoder.weight"], sd["bert.embeddings.word_embeddings.weight"])
    with pytest.warns(
        UserWarning, match=r"cls.predictions.decoder.weight \(= bert.embeddings.word_embeddings"
    ):
        pset = rganalysis.ingest(tmp_path / "mlm")
    info = pset.info["cls.predictions.decoder.weight"]
    assert info.kind == "linear" and not info.prunable
    assert torch.equal(pset.tensor("cls.predictions.decoder.weight"), sd["cls.predictions.decoder.weight"])
    untied = sum(pset.info[n].numel for n in pset.prunable_names())
    assert (
        untied
        == sum(
            v.numel()
            for k, v in sd.items()
            if k.endswith(".weight") and v.dim() == 2 and "embeddings" not in k
        )
        - sd["cls.predictions.decoder.weight"].numel()
    )


def test_named_prunable_tensors_are_not_second_guessed():
    e = torch.randn(5, 3)
    info = build_info(
        {"emb.weight": e, "head.weight": e}, kinds={"emb.weight": "embedding"}, prunable=["head.weight"]
    )
    assert info["head.weight"].prunable


def test_same_shape_is_not_a_tie():
    """A head of an embedding's shape with other bits, or equal to it only as a constant, stays prunable."""
    e = torch.randn(5, 3)
    kinds = {"emb.weight": "embedding"}
    info = build_info({"emb.weight": e, "head.weight": e + 1.0}, kinds=kinds)
    assert info["head.weight"].prunable
    ones = torch.ones(5, 3)
    assert build_info({"emb.weight": ones, "head.weight": ones.clone()}, kinds=kinds)["head.weight"].prunable
    with pytest.warns(UserWarning, match="tied to an earlier one"):
        assert not build_info({"emb.weight": e, "head.weight": e.clone()}, kinds=kinds)[
            "head.weight"
        ].prunable
