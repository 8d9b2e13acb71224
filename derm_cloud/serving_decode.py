"""The decode budget of a model server: each request's images reserved from their headers, held until it answers.

A request's images are checked against `DecodeBudget` before any pixel is
decoded: one image or a whole request that could never fit gets 413, one that does not fit next to the decodes in
flight gets 503 with `Retry-After`. What is reserved stays held until the request's response is built
(`DecodeScope.decode_scope`), because its decoded images live that long.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Concatenate, ParamSpec, TypeVar

from derm_cloud.serving_errors import RequestTooLargeError, ServerBusyError
from derm_cloud.serving_limits import DecodeBudget, DecodeEstimate, estimate_decode

__all__ = ["DecodeScope", "in_decode_scope"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S", bound="DecodeScope")


def in_decode_scope(
    method: Callable[Concatenate[_S, _P], _R],
) -> Callable[Concatenate[_S, _P], _R]:
    """Run a request method inside `DecodeScope.decode_scope`: its images' budget is held until it returns."""

    @functools.wraps(method)
    def scoped(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self.decode_scope():
            return method(self, *args, **kwargs)

    return scoped


class DecodeScope:
    """The decode-budget half of `derm_cloud.serving.ModelServer` (which sets both attributes).

    Attributes:
        decode_budget: working memory shared by concurrent decodes.
    """

    decode_budget: DecodeBudget
    _scope: threading.local  # reservations of the request this thread is answering

    @contextmanager
    def decode_scope(self) -> Iterator[None]:
        """Hold the decode-budget reservations of every image decoded inside until the block ends.

        Wrap the whole life of a request's decoded images (decode, predict, output) in one scope; the public
        request methods of this class do it themselves. Scopes nest (the outermost one releases).
        """
        held: list[int] | None = getattr(self._scope, "held", None)
        if held is not None:
            yield
            return
        held = self._scope.held = []
        try:
            yield
        finally:
            self._scope.held = None
            self.decode_budget.release(sum(held))

    def _reserve_decode(self, encoded: Sequence[tuple[bytes, str]]) -> None:
        """Reserve the decode cost of every image of a request from their headers, before any pixel is decoded.

        The sum is what counts: a request's decoded images all live until its response is built (a PNG payload
        keeps its pixels, and the model preprocesses the whole batch), so releasing each image's share after
        its decode would let a request hold more than the budget. Reserving all of it at once (or nothing)
        also means a request refused with 503 has decoded nothing and holds nothing.

        Raises:
            RequestTooLargeError: one image, or all of them together, need more than the whole budget: no retry
                can succeed (413).
            ServerBusyError: the request fits the budget, but not next to the decodes in flight (503).
        """
        known = [(estimate, where) for data, where in encoded if (estimate := estimate_decode(data)) is not None]
        if not known:
            return  # no readable image header: load_image names the problem
        budget = self.decode_budget
        limit_mb = f"{budget.total_bytes / 1e6:,.0f} MB"
        for estimate, where in known:
            if estimate.working_bytes > budget.total_bytes:
                raise RequestTooLargeError(
                    f"{where}: the image is {estimate.describe()}, more than this server's decode budget of "
                    f"{limit_mb}; downscale it (a classifier input is 224-450 px wide) or raise "
                    "DERM_CLOUD_DECODE_BUDGET_MB"
                )
        total = sum(estimate.working_bytes for estimate, _ in known)
        if total > budget.total_bytes:
            largest, where = max(known, key=lambda pair: pair[0].working_bytes)
            raise RequestTooLargeError(
                f"the {len(known)} images of this request need about {total / 1e6:,.0f} MB together to prepare, "
                f"more than this server's decode budget of {limit_mb}, so no retry can succeed; send fewer "
                f"images per request (at most {_images(budget.total_bytes // largest.working_bytes)} like {where}, "
                f"{largest.describe()}) or smaller ones (a classifier input is 224-450 px wide), or raise "
                "DERM_CLOUD_DECODE_BUDGET_MB"
            )
        if not budget.try_reserve(total):
            raise ServerBusyError(
                f"{_what_to_decode(known, total)}: the server is decoding other images and has no room for it right "
                "now; retry after the Retry-After delay",
                retry_after=2,
            )
        self._scope.held.append(total)


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def _what_to_decode(known: Sequence[tuple[DecodeEstimate, str]], total: int) -> str:
    if len(known) == 1:
        estimate, where = known[0]
        return f"{where}: {estimate.describe()}"
    return f"the {len(known)} images of this request (about {total / 1e6:,.0f} MB to prepare together)"
