"""`Summary`: what the analysis hands to the report, one field per section of the report.

Each section is JSON data (numbers, strings, lists and dicts), so that `Summary.to_dict` is exactly what
`report.json` holds (format `derm-cloud-comparison/1`) and the HTML and Markdown writers read the same data.
The per-image answers (`predictions`) travel beside the sections for the exports; they are not part of
`report.json` (`predictions.csv` and `predictions.jsonl` hold them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from derm_cloud.compare.analysis.texts import DISCLAIMER

__all__ = ["FORMAT", "Summary"]

#: The ``format`` key of report.json.
FORMAT = "derm-cloud-comparison/1"


@dataclass(frozen=True)
class Summary:
    """The figures and facts of one comparison run, ready to be written as a report.

    Attributes:
        title: the config's title.
        run: run id, fingerprint, dates, sessions, executor, the redacted config and the versions used.
        dataset: the dataset's description and fingerprint.
        evidence: how many images, lesions and labels the quality figures rest on (the summary's first line).
        metadata: each backend's patient-metadata mode.
        same_model: probability gaps between backends serving the same model file.
        export_parity: cloud endpoints beside the local run of their export.
        top_warnings: warnings shown above everything else (mixed metadata modes, parity gaps).
        backends: each backend's facts (`describe()` plus what the run recorded).
        emulated: names of the backends that talked to an emulator.
        quality: per-backend quality figures on the common set.
        agreement: how far the backends' top labels agree.
        fairness: per-group figures (skin tone, sex, age band, site).
        latency: per-backend latency scenario summaries.
        latency_samples: single-stream latencies per backend (the distribution figure).
        cost: cost per backend, curves over volume and break-even volumes.
        pareto: cost, latency and quality points and the Pareto front.
        methods: how the latency, cost and quality figures were made, in words.
        attribution: credits of the images used.
        warnings: everything the report warns about, each once.
        headline: the summary's first line when quality was not measured (`None` otherwise).
        verdict: each backend judged against the `[decision]` constraints, the ranking and the recommendation
            (`derm_cloud.compare.analysis.verdict`); the report opens with it.
        predictions: per-image answers of every backend (for the exports, not in report.json).
        batch: each backend's batch job beside its real-time figures (`derm_cloud.compare.analysis.batch`).
    """

    title: str
    run: dict[str, Any]
    dataset: dict[str, Any]
    evidence: dict[str, Any]
    metadata: dict[str, Any]
    same_model: dict[str, Any]
    export_parity: dict[str, Any]
    top_warnings: list[str]
    backends: dict[str, Any]
    emulated: list[str]
    quality: dict[str, Any]
    agreement: dict[str, Any]
    fairness: dict[str, Any]
    latency: dict[str, Any]
    latency_samples: dict[str, list[float]]
    cost: dict[str, Any]
    pareto: dict[str, Any]
    methods: dict[str, str]
    attribution: list[str]
    warnings: list[str]
    headline: str | None = None
    verdict: dict[str, Any] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list, repr=False)
    batch: dict[str, Any] = field(default_factory=lambda: {"enabled": False, "backends": {}})

    def to_dict(self) -> dict[str, Any]:
        """The report data as report.json holds it (every section; the per-image answers left out)."""
        sections = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("title", "predictions")}
        return {"format": FORMAT, "title": self.title, "disclaimer": DISCLAIMER, **sections}
