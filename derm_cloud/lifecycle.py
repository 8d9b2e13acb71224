"""The lifecycle `Classifier` and `Embedder` share: close once, use as a context manager, refuse calls when closed.

Both interfaces hold SDK clients, sessions or runtimes that must be released; this mixin keeps one copy of the
plumbing, so a closed classifier and a closed embedder say the same thing in the same words.
"""

from __future__ import annotations

from typing import ClassVar, Self

__all__ = ["Closable"]


class Closable:
    """Mixin: `close()` (safe to call twice), `with ... as x:`, a `repr` naming the model, `_check_open()`.

    A class using it sets `self._closed = False` and `self.model_id` in its `__init__`, names what a caller should
    create anew in `_closed_hint`, and overrides `_close` to release what it holds.
    """

    #: what the "is closed" error tells the caller to create anew ("classifier", "embedder").
    _closed_hint: ClassVar[str] = "instance"
    model_id: str
    _closed: bool

    def _close(self) -> None:
        """Release SDK clients, sessions or runtimes; subclasses override when they hold any."""

    def close(self) -> None:
        """Release resources; further calls raise. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r})"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed; create a new {self._closed_hint}")
