"""A deployment's recent latencies as the router observed them, for the hedge delay.

The router sees two kinds of calls:

* **answered**: the call returned (an answer) while the router was still waiting for it: its latency is known;
* **cut**: the router stopped waiting (a hedge answered first, the call's share of the deadline ran out, or
  the request was answered elsewhere): all the router knows is that the call took *longer* than the time at
  which it was cut. That is a right-censored observation.

A percentile over answered calls only would drop exactly the slow calls, and one that also counts the late
answers of calls already cut (the slow ones that lost a race) drags the hedge delay up to the slow calls'
latency, where hedging buys nothing: with a fifth of the calls slow, a p90 hedge stops helping within one
window of traffic. `LatencyWindow.quantile` is the Kaplan-Meier estimate instead (Kaplan & Meier 1958),
which uses a cut call for what it says: "longer than this".
"""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["LatencyWindow"]

# Kaplan-Meier survival is a product of fractions; a quantile that should land exactly on an observation must
# not be missed by a rounding error in the last bit.
_EPSILON = 1e-9


class LatencyWindow:
    """The last `size` calls of one deployment: `(seconds, answered)`; thread-safe.

    Example:
        >>> w = LatencyWindow(10)
        >>> for ms in (10, 11, 12, 13, 14, 15, 16, 17):
        ...     w.answered(ms / 1000)
        >>> w.cut(0.05); w.cut(0.05)  # two calls cut after 50 ms: slower than that, by how much unknown
        >>> w.quantile(50), w.quantile(95)  # p95 lies past the cut calls: the longest answer seen stands in
        (0.014, 0.017)
    """

    def __init__(self, size: int) -> None:
        self._calls: deque[tuple[float, bool]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._calls)

    def answered(self, seconds: float) -> None:
        """A call that answered after `seconds`."""
        with self._lock:
            self._calls.append((seconds, True))

    def cut(self, seconds: float) -> None:
        """A call the router stopped waiting for after `seconds` (it would have taken longer)."""
        with self._lock:
            self._calls.append((seconds, False))

    def quantile(self, percentile: float) -> float | None:
        """The Kaplan-Meier `percentile` of the latency, in seconds; `None` when no call has answered.

        With no cut calls this is the nearest-rank percentile. When more calls were cut than the percentile
        leaves above it (p90 with a fifth of the calls cut), the estimate cannot reach it: the data say only
        that those calls run past the time they were cut. The longest answered call stands in then: waiting
        longer than that has never been seen to pay off, so that is when a hedge should go.
        """
        with self._lock:
            calls = sorted(self._calls)
        target = 1.0 - percentile / 100.0
        at_risk = len(calls)
        survival = 1.0
        last_answer: float | None = None
        i = 0
        while i < len(calls):
            t = calls[i][0]
            answered = cut = 0
            while i < len(calls) and calls[i][0] == t:  # ties: answers before cuts, as Kaplan-Meier counts them
                answered += calls[i][1]
                cut += not calls[i][1]
                i += 1
            if answered:
                survival *= 1.0 - answered / at_risk
                last_answer = t
                if survival <= target + _EPSILON:
                    return t
            at_risk -= answered + cut
        return last_answer
