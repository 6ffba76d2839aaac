"""Shared fixtures: small real models built here, never downloaded."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def assert_state_dicts_equal(a: dict, b: dict) -> None:
    """Same keys in the same order, same dtypes and shapes, same bits."""
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A HuggingFace BERT folder (BertModel, 2 layers, hidden 32) written with save_pretrained."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=40)
    d = tmp_path_factory.mktemp("tiny_bert")
    transformers.BertModel(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def resnet18_sd():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


def pytest_sessionfinish(session, exitstatus):
    """A run that collects no test is a failure, never a silent pass (pytest's exit status 5)."""
    if exitstatus == 5:
        session.exitstatus = 1
