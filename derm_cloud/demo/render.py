"""What the demo shows, as HTML built from plain values (no gradio here, so it is testable on its own).

Every dynamic string is escaped. Elements carry `data-*` attributes (backend, class code, probability,
referral) so that a browser test can read the rendered results without parsing prose.

Example:
    >>> html = render_error("not an image")
    >>> 'data-kind="error"' in html
    True
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from derm_cloud.taxonomy import class_info

if TYPE_CHECKING:
    from derm_cloud.base import BackendInfo
    from derm_cloud.compare.run.prices import PriceCatalogue
    from derm_cloud.governance.referral import ReferralDecision
    from derm_cloud.types import Prediction

__all__ = [
    "DEFAULT_MONTHLY_VOLUME",
    "DISCLAIMER",
    "BackendResult",
    "call_cost",
    "render_error",
    "render_results",
    "render_status",
]

DISCLAIMER = (
    "This is not a diagnosis. derm-cloud supports triage and research only; a clinician reviews every result, "
    "referred or not. Do not use it to decide on treatment."
)
TOP_K = 3
#: Calls per month an always-on endpoint's cost is shared over (the comparator's default `monthly_volume`).
DEFAULT_MONTHLY_VOLUME = 100_000
HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class BackendResult:
    """One backend's answer for the demo: a prediction, or the error that replaced it."""

    name: str
    info: BackendInfo
    prediction: Prediction | None = None
    error: str | None = None


def _money(value: float, currency: str) -> str:
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency, "")
    text = f"{value:.6f}".rstrip("0").rstrip(".") if value < 0.01 else f"{value:.4f}".rstrip("0").rstrip(".")
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


def call_cost(
    info: BackendInfo,
    prediction: Prediction | None,
    catalogue: PriceCatalogue | None,
    monthly_volume: int = DEFAULT_MONTHLY_VOLUME,
) -> str:
    """The cost of one call in words, from the price catalogue; `"unknown"` (with why) when it has no price.

    An always-on service (instance or node hours) costs the same whatever the traffic, so a call's cost is the
    month's bill shared over `monthly_volume` calls: the text states that volume, the instance count and the
    hourly rate it comes from.

    Example:
        >>> from derm_cloud.base import BackendInfo
        >>> call_cost(BackendInfo("local-onnx", "local", "onnxruntime", "m", billing={"sku": "local.cpu"}), None, None)
        'no per-call charge (runs on this machine)'
    """
    sku = info.billing.get("sku")
    if info.provider == "local" or (isinstance(sku, str) and sku.startswith("local.")):
        return "no per-call charge (runs on this machine)"
    entry = catalogue.lookup(sku, info.provider) if catalogue is not None and sku else None
    if entry is None:
        return f"unknown (no catalogue price for {sku})" if sku else "unknown (the backend names no price)"
    dated = f"price as of {entry.as_of}"
    b = info.billing
    if entry.basis == "per_request" and entry.price is not None:
        return f"{_money(entry.price, entry.currency)} per call ({dated})"
    if entry.basis in ("instance_hour", "node_hour") and entry.price is not None and entry.always_on:
        unit = "instance" if entry.basis == "instance_hour" else "node"
        count = int(b.get("instances", b.get("nodes", 1)))
        per_call = entry.price * count * HOURS_PER_MONTH / monthly_volume
        return (
            f"{_money(per_call, entry.currency)} per call at {monthly_volume:,} calls/month ({count} x "
            f"{entry.sku or unit} x {HOURS_PER_MONTH} h at {_money(entry.price, entry.currency)} per {unit}-hour, "
            f"always on whatever the traffic; {entry.price_class}, {entry.region}; {dated})"
        )
    if entry.basis == "serverless_gb_second" and entry.price is not None and prediction is not None:
        memory_gb = b.get("memory_gb")
        if memory_gb is None and b.get("memory_mb") is not None:
            memory_gb = float(b["memory_mb"]) / 1024
        if memory_gb is not None:
            cost = float(memory_gb) * prediction.latency_ms / 1000 * entry.price + (entry.per_request or 0.0)
            took = f"{memory_gb:g} GB x {prediction.latency_ms:.0f} ms"
            return f"{_money(cost, entry.currency)} for this call ({took}; {dated})"
    if entry.basis == "per_token" and prediction is not None:
        tin, tout = prediction.extra.get("prompt_tokens"), prediction.extra.get("completion_tokens")
        per_in, per_out = entry.input_per_million, entry.output_per_million
        if tin is not None and tout is not None and per_in is not None and per_out is not None:
            cost = (float(tin) * per_in + float(tout) * per_out) / 1e6
            return f"{_money(cost, entry.currency)} for this call ({tin} + {tout} tokens; {dated})"
    if entry.basis == "per_1000_units" and entry.tiers:
        paid = next((price for _, price in entry.tiers if price > 0), None)
        if paid is not None:
            free = entry.tiers[0][0] if entry.tiers[0][1] == 0 else None
            after = f" after the first {free:,.0f} free per month" if free else ""
            return f"{_money(paid / 1000, entry.currency)} per call{after} ({dated})"
    return f"unknown (cannot price {entry.id} per call without more billing details)"


def _stores(info: BackendInfo) -> str:
    if not info.data_leaves_machine and not info.emulated:
        return "no: the image stays on this machine"
    if info.stores_images is None:
        return "unknown: check the provider's data terms"
    return "yes: the provider keeps the image" if info.stores_images else "no (per the service's documented behaviour)"


def render_status(message: str, *, ok: bool = True) -> str:
    """A one-line status (image accepted, what was stripped)."""
    kind = "ok" if ok else "error"
    return f'<div class="dc-status" data-kind="{kind}" role="status">{html.escape(message)}</div>'


def render_error(message: str, title: str = "Cannot use this image") -> str:
    """A visible error a person can act on (bad upload, no backend chosen)."""
    return (
        f'<div class="dc-status dc-error" data-kind="error" role="alert"><b>{html.escape(title)}:</b> '
        f"{html.escape(message)}</div>"
    )


def _card(result: BackendResult, catalogue: PriceCatalogue | None, monthly_volume: int) -> str:
    info = result.info
    name = html.escape(result.name)
    where = "emulated on 127.0.0.1 (same model, real SDK)" if info.emulated else (info.region or "this machine")
    head = (
        f'<div class="dc-card" data-backend="{name}" data-ok="{"false" if result.error else "true"}">'
        f"<h3>{name}</h3><div class='dc-service'>{html.escape(info.service)} &middot; {html.escape(where)}</div>"
    )
    if result.error is not None or result.prediction is None:
        why = html.escape(result.error or "no answer")
        return head + f'<div class="dc-backend-error" role="alert">Failed: {why}</div></div>'
    p = result.prediction
    rows = []
    if p.mapped:
        for score in p.top(TOP_K):
            cls = class_info(score.label)
            flag = " (malignant)" if cls.malignant else ""
            rows.append(
                f'<tr class="dc-row" data-code="{cls.code}" data-prob="{score.score:.6f}">'
                f"<td><b>{cls.code}</b> {html.escape(cls.name)}{flag}</td>"
                f'<td class="dc-prob">{score.score * 100:.1f}%</td></tr>'
            )
    else:
        rows.append('<tr><td colspan="2">labels are not lesion classes: this backend cannot triage</td></tr>')
    cost = html.escape(call_cost(info, p, catalogue, monthly_volume))
    facts = (
        f'<ul class="dc-facts"><li>latency: <span class="dc-latency" data-ms="{p.latency_ms:.1f}">'
        f"{p.latency_ms:.0f} ms</span> ({p.attempts} attempt{'s' if p.attempts != 1 else ''})</li>"
        f'<li>cost of this call: <span class="dc-cost">{cost}</span></li>'
        f'<li>stores the image: <span class="dc-stores">{html.escape(_stores(info))}</span></li></ul>'
    )
    return head + f"<table class='dc-top'>{''.join(rows)}</table>{facts}</div>"


def render_results(
    results: Sequence[BackendResult],
    decision: ReferralDecision | None,
    *,
    policy_text: str,
    catalogue: PriceCatalogue | None,
    image_note: str = "",
    monthly_volume: int = DEFAULT_MONTHLY_VOLUME,
) -> str:
    """The side-by-side predictions, the referral decision with reasons, and the not-a-diagnosis statement."""
    cards = "".join(_card(r, catalogue, monthly_volume) for r in results)
    if decision is None:
        referral = (
            '<div id="dc-referral" class="dc-referral" data-refer="unknown"><b>No referral decision:</b> '
            "no backend answered. Refer to a clinician.</div>"
        )
    else:
        verdict = "Refer to a clinician first" if decision.refer else "No referral rule fired"
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in decision.reasons) or "<li>none of the rules fired</li>"
        referral = (
            f'<div id="dc-referral" class="dc-referral" data-refer="{str(decision.refer).lower()}">'
            f"<b>{verdict}.</b> Policy: {html.escape(policy_text)}.<ul class='dc-reasons'>{reasons}</ul></div>"
        )
    note = f'<div class="dc-image-note">{html.escape(image_note)}</div>' if image_note else ""
    return (
        f'<div id="dc-results">{note}<div class="dc-cards">{cards}</div>{referral}'
        f'<p class="dc-disclaimer" role="note"><b>{html.escape(DISCLAIMER)}</b></p></div>'
    )
