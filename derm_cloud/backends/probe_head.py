"""A probe's head as plain arrays: standardise, linear layer, temperature, softmax. No pickle, no scikit-learn.

`derm-cloud probe fit` trains the head with scikit-learn (`derm_cloud.probe.fit`) and writes its
coefficients here, checked to reproduce scikit-learn's probabilities; serving it needs numpy only, and loading
it runs no code from the file (`numpy.load(allow_pickle=False)`), so a probe folder from elsewhere is data, not
a program.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from derm_cloud.errors import ModelSpecError

__all__ = ["LinearHead"]

_ARRAYS = ("mean", "scale", "coef", "intercept", "beta", "classes")


@dataclass(frozen=True, eq=False)
class LinearHead:
    """`softmax(beta * (((x - mean) / scale) @ coef.T + intercept))` over `classes`.

    Attributes:
        mean, scale: standardisation of each embedding dimension, shape `(d,)`.
        coef: `(k, d)` weights; intercept: `(k,)`.
        beta: inverse temperature fitted on held-out folds (temperature scaling).
        classes: the `k` class codes, in column order.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    beta: float
    classes: tuple[str, ...]

    @property
    def dimension(self) -> int:
        """Embedding length the head takes."""
        return int(self.coef.shape[1])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities `(n, k)` for embeddings `(n, d)`."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise ModelSpecError(f"the head takes embeddings of length {self.dimension}, got shape {x.shape}")
        logits = self.beta * (((x - self.mean) / self.scale) @ self.coef.T + self.intercept)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        out: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the arrays to an `.npz` file (no pickled objects)."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp.npz")
        np.savez(
            tmp,
            mean=self.mean,
            scale=self.scale,
            coef=self.coef,
            intercept=self.intercept,
            beta=np.asarray(self.beta),
            classes=np.asarray(self.classes, dtype=np.str_),
        )
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearHead:
        """Read a head written by `save`.

        Raises:
            ModelSpecError: the file is missing, holds pickled objects, or its arrays do not fit together.
        """
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                arrays = {name: data[name] for name in _ARRAYS}
        except (OSError, KeyError, ValueError) as exc:
            raise ModelSpecError(f"cannot read the probe head {path}: {exc}") from None
        coef = arrays["coef"].astype(np.float64)
        head = cls(
            mean=arrays["mean"].astype(np.float64),
            scale=arrays["scale"].astype(np.float64),
            coef=coef,
            intercept=arrays["intercept"].astype(np.float64),
            beta=float(arrays["beta"]),
            classes=tuple(str(c) for c in arrays["classes"].tolist()),
        )
        k, d = coef.shape if coef.ndim == 2 else (0, 0)
        shapes_ok = (
            coef.ndim == 2
            and head.mean.shape == (d,)
            and head.scale.shape == (d,)
            and head.intercept.shape == (k,)
            and len(head.classes) == k
            and bool(np.all(head.scale > 0))
        )
        if not shapes_ok:
            raise ModelSpecError(f"the probe head {path} is inconsistent: its arrays do not fit together")
        return head
