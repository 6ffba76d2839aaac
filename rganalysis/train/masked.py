"""One masked training loop for every training callback of the package: Adam from an initial state dict
with pruned weights held at zero (masked weights and masked gradients), mini-batches in a seeded order.

Inputs are one tensor (``model(x)``) or a dict of tensors of the same length (``model(**x)``: token ids
and attention masks for a BERT); the model returns logits, or an object with ``.logits`` (HuggingFace).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["Inputs", "MaskedTrainer", "accuracy", "train_masked"]

#: A batch of inputs: one tensor (n, ...) or a dict of tensors (n, ...) passed as keywords.
Inputs = torch.Tensor | Mapping[str, torch.Tensor]


def _take(x: Inputs, idx: torch.Tensor) -> Inputs:
    return x[idx] if isinstance(x, torch.Tensor) else {k: v[idx] for k, v in x.items()}


def _logits(model: nn.Module, x: Inputs) -> torch.Tensor:
    out = model(x) if isinstance(x, torch.Tensor) else model(**x)
    return getattr(out, "logits", out)


def _length(x: Inputs) -> int:
    return len(x) if isinstance(x, torch.Tensor) else len(next(iter(x.values())))


def train_masked(
    model: nn.Module,
    init: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    x: Inputs,
    y: torch.Tensor,
    *,
    epochs: int,
    seed: int,
    lr: float = 5e-3,
    batch_size: int = 128,
    weight_decay: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Train ``model`` from ``init`` (a full state dict) with ``masks`` (parameter name -> bool tensor,
    True = alive) held: the masked weights start at zero and their gradients are zeroed before every Adam
    step (lr ``lr``, batches of ``batch_size`` in the order of ``torch.Generator().manual_seed(seed)``),
    cross-entropy on ``y`` (n,) int64 class indices.  ``epochs`` passes over the data.  Dropout and other
    randomness of the forward pass draw from torch's global generator, forked and seeded with ``seed`` so
    the caller's generator is untouched.  Returns a detached copy of the trained state dict (the model is
    left in eval mode with those weights)."""
    model.load_state_dict(dict(init))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, m in masks.items():
            params[k].mul_(m.to(params[k].device))
    dev_masks = {k: m.to(params[k].device) for k, m in masks.items()}
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(int(seed))
    n = _length(x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model.train()
        for _ in range(int(epochs)):
            for b in torch.randperm(n, generator=g).split(int(batch_size)):
                opt.zero_grad()
                nn.functional.cross_entropy(_logits(model, _take(x, b)), y[b]).backward()
                for k, m in dev_masks.items():
                    params[k].grad.mul_(m)
                opt.step()
    model.eval()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def accuracy(model: nn.Module, x: Inputs, y: torch.Tensor) -> float:
    """Fraction of ``y`` (n,) the model's argmax predicts, in eval mode without gradients."""
    model.eval()
    with torch.no_grad():
        return float((_logits(model, x).argmax(1) == y).float().mean())


def _stable_seed(*parts: object) -> int:
    import zlib

    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


class MaskedTrainer:
    """The retraining of one IMP round as the callback :func:`rganalysis.compute_flow` (``train(weights,
    masks)``) and :func:`rganalysis.response_jacobian` (``train(weights, masks, seed=...)``) expect.

    ``model``: the network (its parameters are overwritten on every call); ``init``: its full state dict
    at the rewind point (every tensor the flow does not prune -- biases, norms, embeddings, the head -- is
    rewound to it too); ``task``: an object with ``x_train`` (tensor or dict of tensors) and ``y_train``
    (n,) int64, and optionally ``x_test`` / ``y_test`` for :meth:`evaluate`.  A call trains from ``init``
    with the given weights times their masks (:func:`train_masked`: ``epochs``, ``lr``, ``batch_size``)
    and returns the trained tensors of the layers it was given.  Training seed ``s`` draws mini-batch
    orders from a seed derived from ``(name, s)``: seed 0 is the flow's own (``compute_flow`` passes none),
    seeds 1, 2, ... new orders, the same on every run.  Picklable when ``model`` and ``task`` are, so the
    response Jacobian's retrains can run on processes.
    """

    def __init__(
        self,
        model: nn.Module,
        init: Mapping[str, torch.Tensor],
        task: object,
        *,
        epochs: int = 20,
        lr: float = 5e-3,
        batch_size: int = 128,
        name: str = "",
    ):
        self.model = model
        self.init = {k: v.detach().clone() for k, v in init.items()}
        self.task = task
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.name = str(name)

    def seed_for(self, seed: int) -> int:
        """The mini-batch seed of training seed ``seed``."""
        return _stable_seed("masked-trainer", self.name, int(seed))

    def fit_state(
        self, weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], seed: int = 0
    ) -> dict[str, torch.Tensor]:
        """The full trained state dict from ``init`` with ``weights * masks`` (device of the model)."""
        dev = next(self.model.parameters()).device
        start = dict(self.init)
        start.update(
            {k: (w.to(dev) * masks[k].to(dev)) if k in masks else w.to(dev) for k, w in weights.items()}
        )
        return train_masked(
            self.model,
            start,
            masks,
            self.task.x_train,
            self.task.y_train,
            epochs=self.epochs,
            seed=self.seed_for(seed),
            lr=self.lr,
            batch_size=self.batch_size,
        )

    def __call__(
        self, weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], seed: int = 0
    ) -> dict[str, torch.Tensor]:
        sd = self.fit_state(weights, masks, seed)
        return {k: sd[k] for k in weights}

    def evaluate(self, masks: Mapping[str, torch.Tensor] | None = None, seed: int = 0) -> float:
        """Test accuracy after training from ``init`` with ``masks`` (None: dense)."""
        masks = dict(masks or {})
        self.fit_state({k: self.init[k] for k in masks}, masks, seed)
        return accuracy(self.model, self.task.x_test, self.task.y_test)
