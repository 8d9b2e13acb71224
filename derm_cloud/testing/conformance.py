"""What the conformance suite needs to know about a backend under test; reusable by third-party backends.

A third-party backend's own tests can build a `Subject` and run the same checks as derm-cloud's
`tests/conformance` suite (see that folder for the checks).
"""

from __future__ import annotations

from dataclasses import dataclass

from derm_cloud.base import Classifier
from derm_cloud.testing.emulators.base import EmulatorServer

__all__ = ["Subject"]


@dataclass
class Subject:
    """A backend instance under test.

    Attributes:
        classifier: the backend, ready to predict.
        emulator: the emulator it talks to (cloud backends), so tests can assert what reached the provider.
        sums_to_one: whether probabilities form a distribution over the 7 classes.
    """

    classifier: Classifier
    emulator: EmulatorServer | None = None
    sums_to_one: bool = True
