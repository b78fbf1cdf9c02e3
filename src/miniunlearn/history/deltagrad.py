"""DeltaGrad's full per-iteration record: O(T p) floats, for contrast with Mini-Unlearning's O(p^2) or O(64 p)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from miniunlearn.core.errors import RunError
from miniunlearn.core.storage import load_tensors, save_tensors


@dataclass
class DeltaGradHistory:
    weights: torch.Tensor  # (T, p): w_t before iteration t
    grads: torch.Tensor    # (T, p): batch-mean loss gradient at w_t (no regulariser)
    fingerprint: str

    @property
    def n_iterations(self) -> int:
        return int(self.weights.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.weights.numel() * self.weights.element_size() + self.grads.numel() * self.grads.element_size())

    def save(self, path: str | Path) -> int:
        meta = {"format": "miniunlearn-deltagrad/1", "fingerprint": self.fingerprint}
        return save_tensors(path, {"weights": self.weights, "grads": self.grads}, meta)

    @classmethod
    def load(cls, path: str | Path) -> "DeltaGradHistory":
        tensors, meta = load_tensors(path, "DeltaGrad history", names=["weights", "grads"])
        if meta.get("format") != "miniunlearn-deltagrad/1":
            raise RunError(f"{path} is not a DeltaGrad history file")
        if tensors["weights"].shape != tensors["grads"].shape:
            raise RunError(f"DeltaGrad history {path} is corrupted: weights and grads differ in shape")
        return cls(tensors["weights"], tensors["grads"], meta.get("fingerprint", ""))
