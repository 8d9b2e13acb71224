"""The summary's fixed texts: the disclaimer, attributions, how to get quality figures, and how each figure was made.

Every report states that the comparison supports triage and research and that a clinician reviews every
result (`DISCLAIMER`), credits the images it ran on (`attribution`), and says in words how its latency, cost
and quality figures were measured (`methods`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from derm_cloud.compare.analysis.latency import METHOD_TEXT

if TYPE_CHECKING:
    from derm_cloud.compare.run.config import ComparisonConfig
    from derm_cloud.data import Dataset, Sample

__all__ = [
    "COST_METHOD",
    "DISCLAIMER",
    "HAM10000_ATTRIBUTION",
    "HOW_TO_LABEL",
    "attribution",
    "methods",
    "quality_headline",
    "timer_text",
]

DISCLAIMER = (
    "This comparison supports triage and research only; it is not a diagnosis and no result here is fit to "
    "diagnose anyone. A clinician reviews every result."
)
HAM10000_ATTRIBUTION = (
    "HAM10000 images: Tschandl, Rosendahl & Kittler, The HAM10000 dataset, Sci. Data 5, 180161 (2018), "
    "doi:10.7910/DVN/DBW86T, CC BY-NC 4.0 (non-commercial)."
)
HOW_TO_LABEL = (
    "Quality and fairness figures need labelled images. Pass a CSV manifest with --dataset (or [dataset] "
    "source): a path column (file/path/image) relative to the CSV and a label column (label or dx: akiec, bcc, "
    "bkl, df, mel, nv, vasc or their full names), optionally age, sex, site, fitzpatrick and lesion_id; or a "
    "HAM10000 folder (HAM10000_metadata.csv beside the images)."
)
COST_METHOD = (
    "Prices from the shipped catalogue (derm-cloud docs, reference/cloud-apis.md section 11; each with source, "
    "as-of date and status; read from web pages), the user catalogue `derm-cloud prices refresh` reads from the "
    "providers' price APIs, and any [cost] prices files. Always-on endpoints (instance-hour, node-hour) cost "
    "rate x instances x 730 h "
    "per month whatever the traffic (idle cost), with instances raised to carry the monthly volume at the "
    "measured throughput and the configured utilisation; per-request, serverless (GB-second x measured "
    "latency), per-token (measured token usage) and tiered per-1,000-unit prices scale with volume. Cost per "
    "correctly triaged melanoma = monthly cost / (volume x melanoma prevalence x share of melanomas referred). "
    "Unknown prices stay unknown (blank), never 0. Emulated backends' throughput is this machine's, so their "
    "always-on cost uses the configured instance count (default 1), not throughput-based sizing."
)


def timer_text() -> str:
    """What each latency figure measures (the report's Latency section states it)."""
    from derm_cloud.compare.run.calls import PREPARED_OUTSIDE_TIMER

    preparation = (
        "Each image is read and prepared (validated, EXIF stripped, re-encoded only where needed) once, before "
        "the timed call: preparation is outside the timer."
        if PREPARED_OUTSIDE_TIMER
        else "Reading the image file is outside the timer; the library's image preparation (validation, EXIF "
        "strip, any re-encode) happens inside predict() and is inside the timer."
    )
    return (
        "The latency timer starts when the comparator calls the backend's predict() and stops when the "
        "Prediction is returned (client-observed wall time): it covers the library's request building and "
        "response parsing, the provider SDK, the network round trip and the service's own time (for an emulated "
        "backend: the emulator and the model on this machine). " + preparation
    )


def methods(config: ComparisonConfig, common: Sequence[Sample]) -> dict[str, str]:
    """How the latency, cost and quality figures were made, in words (`common`: the scored image set)."""
    d = config.scenario_defaults
    resampled = "lesions (cluster bootstrap over lesion_id)" if any(s.lesion_id for s in common) else "images"
    return {
        "latency": METHOD_TEXT.format(
            method=d["percentile_method"],
            warmup=d["warmup"],
            n_boot=d["bootstrap"],
            seed=config.seed,
            min_samples=d["min_samples"],
        ),
        "cost": COST_METHOD,
        "timer": timer_text(),
        "quality": "Metrics from derm_cloud.compare.analysis.metrics on the quality pass (each image once per "
        "backend); predicted class = argmax (per-class figures also under the ISIC p > 0.5 rule, each "
        "named); 95% CIs by stratified percentile bootstrap "
        f"({d['bootstrap']} resamples, seed {config.seed}) resampling {resampled}. "
        "Every backend is scored on the same common set: "
        "the labelled images that every label-mapped backend answered (a backend that answered none is "
        "left out of it); each backend's own coverage (answered / attempted) is shown beside its figures.",
    }


def attribution(config: ComparisonConfig, dataset: Dataset) -> list[str]:
    """Credits of the images the run used: HAM10000 and the dermapred example photo, where used."""
    from derm_cloud.data import is_ham10000_id

    ham = any(is_ham10000_id(s.image_id) for s in dataset.samples) or "ham10000" in dataset.name.lower()
    out = [HAM10000_ATTRIBUTION] if ham else []
    if config.dataset.source in (None, "default", "dermapred-example"):
        from derm_cloud.models.example_image import EXAMPLE_ATTRIBUTION

        out.append(EXAMPLE_ATTRIBUTION)
    return out


def quality_headline(quality: Mapping[str, object], default_run: bool) -> str | None:
    """The report summary's first line when it has no quality figures (`None` when it has them).

    Args:
        quality: the summary's quality section.
        default_run: whether this is the embedded default comparison (its fix is a different command).
    """
    if quality.get("available"):
        return None
    from derm_cloud.compare.run.defaults import FETCH_LABELLED_COMMAND, HAM10000_DEV_SOURCE

    if default_run:
        fix = f"run `{FETCH_LABELLED_COMMAND}`, then `derm-cloud compare` again"
    else:
        fix = (
            "rerun with `--dataset LABELLED.csv` (a manifest with a label or dx column), or with "
            f"`--dataset {HAM10000_DEV_SOURCE}` after `{FETCH_LABELLED_COMMAND}`"
        )
    return f"Quality not measured: none of these images has a label. To measure it, {fix}."
