"""A family of small residual CNNs on the 8x8 digits (:func:`rganalysis.demo.digits.digits_tasks`), of
several depths and widths, for tickets transferred across depth (:mod:`rganalysis.rg.depth_mapping`).

``DigitsResNet(blocks, width)``: ``stem`` (3x3 conv, 1 -> width), two stages of ``blocks`` residual
blocks each -- stage 0 at 8x8 with ``width`` channels, stage 1 at 4x4 with ``2 width`` (its first block
strides by 2 and has a 1x1 ``downsample`` shortcut) -- then global average pooling and ``head`` (linear,
2 width -> 10).  A block is ``relu(x + conv2(relu(conv1(x))))`` (3x3 convolutions without bias and without
batch norm: the state dict holds only weights and the head's bias).  Parameter names follow torchvision's
pattern ``stages.S.B.conv1.weight``, so depth mappings find the blocks by name.
"""

from __future__ import annotations

import torch
from torch import nn

from rganalysis.errors import InvalidParameterError

__all__ = ["DigitsResNet", "digits_resnet", "resnet_prunable"]


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.downsample = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = x if self.downsample is None else self.downsample(x)
        return torch.relu(short + self.conv2(torch.relu(self.conv1(x))))


class DigitsResNet(nn.Module):
    """Residual CNN on flattened 8x8 digits: input (n, 64) in [0, 1], output (n, 10) logits."""

    def __init__(self, blocks: int = 2, width: int = 8):
        super().__init__()
        if int(blocks) < 1 or int(width) < 1:
            raise InvalidParameterError(f"blocks and width must be >= 1, got {blocks}, {width}")
        self.blocks, self.width = int(blocks), int(width)
        w = self.width
        self.stem = nn.Conv2d(1, w, 3, padding=1, bias=False)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(*[_Block(w, w, 1) for _ in range(self.blocks)]),
                nn.Sequential(
                    *[_Block(w if b == 0 else 2 * w, 2 * w, 2 if b == 0 else 1) for b in range(self.blocks)]
                ),
            ]
        )
        self.head = nn.Linear(2 * w, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x.reshape(-1, 1, 8, 8)))
        for s in self.stages:
            h = s(h)
        return self.head(h.mean(dim=(2, 3)))


def digits_resnet(blocks: int = 2, width: int = 8, seed: int = 0) -> DigitsResNet:
    """``DigitsResNet(blocks, width)`` initialised from ``torch.manual_seed(seed)`` (PyTorch defaults)."""
    torch.manual_seed(int(seed))
    return DigitsResNet(blocks, width)


def resnet_prunable(model: nn.Module) -> list[str]:
    """Every weight IMP prunes in a :class:`DigitsResNet`: all convolutions and the head's weight."""
    return [n for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
