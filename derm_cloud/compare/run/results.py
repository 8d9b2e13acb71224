"""`RunResults`: what the run stage hands to the analysis, read back from the run store in one piece.

Every stored row of one run (grouped by backend and scenario, in the store's stable order), the dataset, the
facts each backend reported, the group each image falls in for the fairness analysis, the price catalogue and
the versions of everything that ran. The analysis reads nothing else: no file, no store, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from derm_cloud.compare.run.facts import MACHINE_FACT, versions
from derm_cloud.compare.run.groups import GroupColumns, group_columns
from derm_cloud.compare.run.prices import PriceCatalogue

if TYPE_CHECKING:
    from derm_cloud.compare.run.config import ComparisonConfig
    from derm_cloud.compare.run.store import ResultRow, RunStore
    from derm_cloud.data import Dataset

__all__ = ["RunResults", "collect_results"]


@dataclass(frozen=True)
class RunResults:
    """One run's rows and the facts around them.

    Attributes:
        run_id: the run's id in the store.
        fingerprint: the hash of the config and dataset the run was made with.
        created: when the run was created (seconds since the epoch).
        sessions: how many process sessions worked on the run (more than one: it was resumed).
        dataset: the images, their labels, lesions and metadata, in dataset order.
        dataset_facts: the dataset's description (`Dataset.describe()`) and content fingerprint.
        backends: backend name -> facts (`describe()` and what the run recorded), in run order.
        rows: backend -> scenario -> stored rows, ordered by repeat and image id.
        groups: the fairness groups of every labelled image (`group_image_ids` gives their order).
        group_image_ids: the image id of each position in `groups`.
        prices: the price catalogue the run is costed with.
        versions: Python, platform and package versions.
        default_run: whether this is the embedded default comparison.
        warnings: what the run stage has to say (backends skipped, failed rows retried).
        timings_s: seconds spent setting up and sending requests.
        machine: per process session, the machine's cores, CPU model and load average before and after it,
            and each phase's window (`derm_cloud.compare.run.local_executor`), in session order.
    """

    run_id: str
    fingerprint: str
    created: float
    sessions: int
    dataset: Dataset
    dataset_facts: dict[str, Any]
    backends: dict[str, dict[str, Any]]
    rows: Mapping[str, Mapping[str, Sequence[ResultRow]]]
    groups: GroupColumns
    group_image_ids: tuple[str, ...]
    prices: PriceCatalogue
    versions: dict[str, str | None] = field(default_factory=dict)
    default_run: bool = False
    warnings: tuple[str, ...] = ()
    timings_s: dict[str, float] = field(default_factory=dict)
    machine: list[dict[str, Any]] = field(default_factory=list)

    def rows_of(self, backend: str, scenario: str) -> list[ResultRow]:
        """The stored rows of one backend and scenario (`quality`, `single_stream`, `offline/c=4` ...)."""
        return list(self.rows.get(backend, {}).get(scenario, ()))

    def answers(self, backend: str) -> dict[str, ResultRow]:
        """The backend's quality-pass rows by image id."""
        return {r.image_id: r for r in self.rows_of(backend, "quality")}


def collect_results(
    store: RunStore,
    run_id: str,
    config: ComparisonConfig,
    dataset: Dataset,
    backends: Mapping[str, dict[str, Any]],
    *,
    default_run: bool = False,
    warnings: Sequence[str] = (),
    timings_s: Mapping[str, float] | None = None,
) -> RunResults:
    """Read a run back from its store, with everything the analysis needs beside the rows.

    Estimating skin tone for the fairness groups reads the labelled images (where no Fitzpatrick type is
    recorded), and the price catalogue reads its files: both happen here, so the analysis reads nothing.
    """
    rows: dict[str, dict[str, list[ResultRow]]] = {name: {} for name in backends}
    for row in store.results(run_id):
        rows.setdefault(row.backend, {}).setdefault(row.scenario, []).append(row)
    labelled = [s for s in dataset.samples if s.label is not None]
    tone = config.fairness["skin_tone"]
    info = store.run(run_id)
    return RunResults(
        run_id=run_id,
        fingerprint=info.fingerprint,
        created=info.created,
        sessions=store.sessions(run_id),
        dataset=dataset,
        dataset_facts={**dataset.describe(), "fingerprint": dataset.fingerprint()},
        backends=dict(backends),
        rows=rows,
        groups=group_columns(labelled, skin_tone=None if tone == "none" else tone),
        group_image_ids=tuple(s.image_id for s in labelled),
        prices=PriceCatalogue.load(config.price_files),
        versions=versions(),
        default_run=default_run,
        warnings=tuple(warnings),
        timings_s=dict(timings_s or {}),
        machine=[v for _, v in sorted(store.facts(run_id, MACHINE_FACT).items(), key=lambda kv: kv[1]["session"])],
    )
