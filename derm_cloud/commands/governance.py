"""``derm-cloud governance referral | notes | model-cards``: human-in-the-loop and register entries from data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from derm_cloud.errors import ConfigError

DISCLAIMER = "Triage support only, not a diagnosis: a clinician reviews every result, referred or not."


def register(sub: Any) -> None:
    p = sub.add_parser(
        "governance",
        help="referral thresholds, risk register / DPIA notes, model cards",
        description=f"Responsible-delivery tools computed from data. {DISCLAIMER}",
    )
    gsub = p.add_subparsers(dest="governance_command", metavar="SUBCOMMAND")
    p.set_defaults(handler=lambda args: _help(p))

    r = gsub.add_parser(
        "referral",
        help="fit a referral threshold to a target sensitivity and show what it costs",
        description="Run a backend on a labelled dataset and find the threshold t of the rule 'refer when "
        "max(p_mel, p_bcc, p_akiec) >= t' that reaches the target melanoma (and malignant) sensitivity, the "
        f"referral rate it costs, overall and per group. {DISCLAIMER}",
    )
    r.add_argument("--backend", "-b", default="local-onnx", help="backend name (default local-onnx)")
    r.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE", help="backend option")
    r.add_argument("--dataset", "-d", required=True, help="labelled dataset (CSV manifest, HAM10000 folder, parquet)")
    r.add_argument("--target-sensitivity", type=float, default=0.95, help="default 0.95")
    r.add_argument("--limit", type=int, help="a seeded, class-stratified subset of N images")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--min-confidence", type=float, help="also refer when the top class is below this probability")
    r.add_argument("--no-metadata", action="store_true", help="do not pass age/sex/site to the model")
    r.add_argument(
        "--prevalence",
        help="also report the referral rate at a class mix: 'ham10000' or 'mel=0.02,...' (others as in HAM10000)",
    )
    r.add_argument(
        "--skin-tone",
        choices=["auto", "fitzpatrick", "ita", "none"],
        default="auto",
        help="skin-tone groups (auto: Fitzpatrick when recorded, else ITA estimated from the images)",
    )
    r.add_argument("--predictions", help="reuse a predictions.jsonl written by an earlier --out instead of running")
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--out", help="folder for referral.json, referral.md, referral.png, policy.json, predictions.jsonl")
    r.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    r.set_defaults(handler=run_referral)

    n = gsub.add_parser(
        "notes",
        help="risk-register and DPIA entries from a comparator run",
        description="Dated, evidence-linked risk-register and DPIA entries computed from a finished "
        "`derm-cloud compare` run (its output folder or report.json). Each entry cites the figure and run.",
    )
    n.add_argument("run", metavar="RUN", help="comparison output folder (holds report.json) or the report.json")
    n.add_argument("--min-sensitivity", type=float, default=0.9, help="level for melanoma/malignant sensitivity")
    n.add_argument("--max-ece", type=float, default=0.1, help="highest acceptable calibration error")
    n.add_argument("--max-gap", type=float, default=0.1, help="largest acceptable sensitivity gap between groups")
    n.add_argument("--min-group-positives", type=int, default=10, help="melanomas a group needs to be judged")
    n.add_argument("--budget", type=float, help="monthly budget in the price catalogue's currency")
    n.add_argument("--referral", action="append", default=[], metavar="JSON", help="referral.json to cite")
    n.add_argument("--out", help="write the Markdown here (default: print it)")
    n.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    n.set_defaults(handler=run_notes)

    m = gsub.add_parser(
        "model-cards",
        help="model cards side by side with the governance questions they leave open",
        description="Size, parameters, architecture, training data, licence, intended use, known limitations "
        "and governance flags of each model (model directories, short names, Hugging Face ids or folders).",
    )
    m.add_argument("models", nargs="+", metavar="MODEL")
    m.add_argument("--dataset", help="name of the evaluation data, to flag training-data overlap (e.g. HAM10000)")
    m.add_argument("--online", action="store_true", help="allow contacting the Hugging Face hub")
    fmt = m.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--text", action="store_true", help="plain text instead of Markdown")
    m.set_defaults(handler=run_model_cards)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# --- referral ------------------------------------------------------------------------------------------------------


def run_referral(args: argparse.Namespace) -> int:
    from derm_cloud.data import load_dataset
    from derm_cloud.governance.referral import ReferralPolicy
    from derm_cloud.governance.referral_eval import evaluate_referral, parse_prevalence

    if not 0 < args.target_sensitivity <= 1:
        raise ConfigError(f"--target-sensitivity must be in (0, 1], got {args.target_sensitivity}")
    ds = load_dataset(args.dataset)
    if args.limit:
        ds = ds.subset(args.limit, seed=args.seed)
    samples = [s for s in ds if s.label is not None]
    if not samples:
        raise ConfigError(f"{ds.name} has no labels; the referral evaluation needs a labelled dataset")
    overlap = None
    if args.predictions:
        by_id = _read_predictions(args.predictions)
        missing = [s.image_id for s in samples if s.image_id not in by_id]
        if missing:
            raise ConfigError(f"{args.predictions} has no prediction for {len(missing)} images (e.g. {missing[0]})")
        preds = [by_id[s.image_id] for s in samples]
        backend_note = f"predictions from {args.predictions}"
    else:
        preds, facts = _run_backend(args, samples)
        backend_note = f"backend {args.backend}"
        from derm_cloud.data import dataset_overlap_warning

        overlap = dataset_overlap_warning(facts, ds)
    groups = _groups(samples, args.skin_tone)
    base = ReferralPolicy(malignant_threshold=None, min_confidence=args.min_confidence, refer_on_disagreement=False)
    ev = evaluate_referral(
        preds,
        [str(s.label) for s in samples],
        target_sensitivity=args.target_sensitivity,
        groups=groups,
        base_policy=base if args.min_confidence is not None else None,
        prevalence=parse_prevalence(args.prevalence),
    )
    if overlap:
        ev.notes.insert(0, f"Training-data overlap: {overlap}")
    if "skin_tone_ita" in groups:
        from derm_cloud.governance.skin_tone import ITA_CAVEAT

        ev.notes.append(f"skin_tone_ita groups: {ITA_CAVEAT}")
    if args.out:
        _write_outputs(Path(args.out), ev, samples, preds, ds, args)
    if args.json:
        print(json.dumps(ev.to_dict(), indent=2, default=str))
        return 0
    print(
        f"Referral on {ds.name}: {ev.n} images ({ev.class_counts['mel']} melanoma, "
        f"{sum(ev.class_counts[c] for c in ('akiec', 'bcc', 'mel'))} malignant), {backend_note}, "
        f"model {ev.model_id}"
    )
    print(f"Rule: refer when {ev.rule}" + (f", or {ev.base_rules}" if ev.base_rules else ""))
    for line in ev.summary_lines():
        print(f"  {line}")
    if ev.groups:
        print("Per group at the melanoma threshold (sensitivity, referral rate; * = too few melanomas to judge):")
        for g in ev.groups:
            sens = "  n/a" if g.sensitivity is None else f"{g.sensitivity:.3f}"
            flag = " *" if g.too_small else ""
            print(
                f"  {g.attribute:<14} {g.group:<18} n={g.n:<5} mel={g.positives:<4} sens={sens} "
                f"rate={g.referral_rate:.3f}{flag}"
            )
    for note in ev.notes:
        print(f"note: {note}")
    if args.out:
        print(f"wrote {Path(args.out) / 'referral.json'} (cite it with `derm-cloud governance notes RUN --referral`)")
    return 0


def _run_backend(args: argparse.Namespace, samples: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    import derm_cloud
    from derm_cloud.commands.classify import parse_options
    from derm_cloud.types import PatientMetadata

    preds = []
    step = max(1, args.batch_size)
    with derm_cloud.create(args.backend, **parse_options(args.option, args.backend)) as clf:
        facts = dict(clf.describe().model_facts)
        # Chunks keep memory flat: predict_batch decodes every image it is given before it starts.
        for lo in range(0, len(samples), step):
            chunk = samples[lo : lo + step]
            metas = [PatientMetadata() if args.no_metadata else s.metadata for s in chunk]
            preds.extend(clf.predict_batch([s.read_bytes() for s in chunk], metas, batch_size=step))
            print(f"\r  {min(lo + step, len(samples))}/{len(samples)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return preds, facts


def _groups(samples: list[Any], skin_tone: str) -> dict[str, list[str]]:
    from derm_cloud.governance._records import age_band

    groups = {
        "sex": [s.metadata.sex for s in samples],
        "age_band": [age_band(s.metadata.age) for s in samples],
        "site": [s.metadata.site or "unknown" for s in samples],
    }
    if skin_tone != "none":
        from derm_cloud.governance.skin_tone import estimate_ita, fitzpatrick_label

        has_fitz = any(s.metadata.fitzpatrick is not None for s in samples)
        use_fitz = skin_tone == "fitzpatrick" or (skin_tone == "auto" and has_fitz)
        if use_fitz:
            groups["skin_tone"] = [fitzpatrick_label(s.metadata.fitzpatrick) for s in samples]
        else:
            groups["skin_tone_ita"] = [estimate_ita(s.read_bytes()).category or "unknown" for s in samples]
    return groups


def _read_predictions(path: str) -> dict[str, Any]:
    from derm_cloud.types import Prediction

    out = {}
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out[str(row["image_id"])] = Prediction.from_dict(row["prediction"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{path}:{line_no}: not a predictions.jsonl line ({exc})") from exc
    return out


def _write_outputs(out: Path, ev: Any, samples: list[Any], preds: list[Any], ds: Any, args: argparse.Namespace) -> None:
    from derm_cloud.governance.referral_eval import plot_referral, referral_markdown

    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        for s, p in zip(samples, preds, strict=True):
            fh.write(json.dumps({"image_id": s.image_id, "label": s.label, "prediction": p.to_dict()}) + "\n")
    payload = ev.to_dict()
    payload["dataset"] = {"name": ds.name, "n": len(samples), "source": str(args.dataset), "limit": args.limit}
    payload["command"] = " ".join(
        ["derm-cloud governance referral", f"--backend {args.backend}"]
        + [f"-o {o}" for o in args.option]
        + [f"--dataset {args.dataset}", f"--target-sensitivity {args.target_sensitivity}"]
        + ([f"--limit {args.limit} --seed {args.seed}"] if args.limit else [])
        + (["--no-metadata"] if args.no_metadata else [])
        + ([f"--min-confidence {args.min_confidence}"] if args.min_confidence is not None else [])
    )
    if ev.points["mel"].threshold is not None:
        payload["policy"] = ev.policy("mel").to_dict()
        ev.policy("mel").save(out / "policy.json")
    (out / "referral.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "referral.md").write_text(referral_markdown(ev), encoding="utf-8")
    (out / "referral.png").write_bytes(plot_referral([ev]))


# --- notes and model cards ---------------------------------------------------------------------------------------


def run_notes(args: argparse.Namespace) -> int:
    from derm_cloud.governance.notes import risk_register

    register_ = risk_register(
        args.run,
        min_sensitivity=args.min_sensitivity,
        max_ece=args.max_ece,
        max_gap=args.max_gap,
        min_group_positives=args.min_group_positives,
        budget=args.budget,
        referrals=args.referral,
    )
    text = json.dumps(register_.to_dict(), indent=2, default=str) if args.json else register_.to_markdown()
    if args.out:
        Path(args.out).write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
        print(f"wrote {args.out}: {len(register_.entries)} entries from run {register_.run_id}")
    else:
        print(text)
    return 0


def run_model_cards(args: argparse.Namespace) -> int:
    from derm_cloud.governance.model_cards import compare_model_cards, model_card

    if args.json:
        cards = [model_card(m, evaluation_dataset=args.dataset, offline=not args.online) for m in args.models]
        print(json.dumps([c.to_dict() for c in cards], indent=2, default=str))
        return 0
    print(
        compare_model_cards(
            args.models,
            evaluation_dataset=args.dataset,
            fmt="text" if args.text else "markdown",
            offline=not args.online,
        ),
        end="",
    )
    return 0
