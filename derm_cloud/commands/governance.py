"""`derm-cloud governance referral | notes | model-cards`: human-in-the-loop and register entries from data."""

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
    held = r.add_mutually_exclusive_group()
    held.add_argument(
        "--folds",
        type=int,
        default=5,
        help="lesion-disjoint folds for the out-of-sample (cross-fitted) headline (default 5)",
    )
    held.add_argument(
        "--calibration-split",
        metavar="NAME",
        help="fit on the rows whose 'split' column is NAME and report on all other rows (instead of --folds)",
    )
    held.add_argument(
        "--policy",
        metavar="POLICY_JSON",
        help="evaluate a saved policy.json unchanged on --dataset (no fitting): sensitivity and referral rate",
    )
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
    from derm_cloud.data import dataset_overlap_warning, load_dataset
    from derm_cloud.governance.referral import (
        SavedPolicy,
        fit_referral,
        parse_prevalence,
        read_predictions,
        write_referral_outputs,
    )

    if not 0 < args.target_sensitivity <= 1:
        raise ConfigError(f"--target-sensitivity must be in (0, 1], got {args.target_sensitivity}")
    saved = SavedPolicy.load(args.policy) if args.policy else None
    ds = load_dataset(args.dataset)
    if args.limit:
        ds = ds.subset(args.limit, seed=args.seed)
    samples = [s for s in ds if s.label is not None]
    if not samples:
        raise ConfigError(f"{ds.name} has no labels; the referral evaluation needs a labelled dataset")
    if args.predictions:
        by_id, facts = read_predictions(args.predictions)
        missing = [s.image_id for s in samples if s.image_id not in by_id]
        if missing:
            raise ConfigError(f"{args.predictions} has no prediction for {len(missing)} images (e.g. {missing[0]})")
        preds = [by_id[s.image_id] for s in samples]
        backend_note = f"predictions from {args.predictions}"
    else:
        preds, facts = _run_backend(args, samples)
        backend_note = f"backend {args.backend}"
    # Checked for stored predictions too: the facts travel in the predictions file's header, and without them
    # the image ids alone still reveal HAM10000 images.
    overlap = dataset_overlap_warning(facts, ds)
    if saved is not None:
        return _saved_policy_run(args, saved, ds, samples, preds, facts, overlap, backend_note)
    fit = fit_referral(
        samples,
        preds,
        target_sensitivity=args.target_sensitivity,
        min_confidence=args.min_confidence,
        skin_tone=args.skin_tone,
        prevalence=parse_prevalence(args.prevalence),
        folds=args.folds,
        seed=args.seed,
        calibration_split=args.calibration_split,
    )
    ev, held = fit.evaluation, fit.held_out
    if overlap:
        ev.notes.insert(0, f"Training-data overlap: {overlap}")
    if args.out:
        write_referral_outputs(
            args.out,
            fit,
            samples,
            preds,
            dataset_name=ds.name,
            source=str(args.dataset),
            limit=args.limit,
            command=_command_line(args),
            model_facts=facts,
        )
    if args.json:
        print(json.dumps({**ev.to_dict(), "out_of_sample": held.to_dict()}, indent=2, default=str))
        return 0
    print(
        f"Referral on {ds.name}: {ev.n} images ({ev.class_counts['mel']} melanoma, "
        f"{sum(ev.class_counts[c] for c in ('akiec', 'bcc', 'mel'))} malignant), {backend_note}, "
        f"model {ev.model_id}"
    )
    print(f"Rule: refer when {ev.rule}" + (f", or {ev.base_rules}" if ev.base_rules else ""))
    print(f"Out of sample, target sensitivity {args.target_sensitivity:.2f}: {held.description}")
    for target in held.points:
        print(f"  {held.headline(target)}")
    print("In sample (threshold fitted on all the images above, measured on the same images):")
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
    for note in held.notes[:-1] + ev.notes:
        print(f"note: {note}")
    if args.out:
        print(f"wrote {Path(args.out) / 'referral.json'} (cite it with `derm-cloud governance notes RUN --referral`)")
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run, recorded in `referral.json`."""
    return " ".join(
        ["derm-cloud governance referral", f"--backend {args.backend}"]
        + [f"-o {o}" for o in args.option]
        + [f"--dataset {args.dataset}", f"--target-sensitivity {args.target_sensitivity}"]
        + ([f"--limit {args.limit} --seed {args.seed}"] if args.limit else [])
        + ([f"--calibration-split {args.calibration_split}"] if args.calibration_split else [f"--folds {args.folds}"])
        + (["--no-metadata"] if args.no_metadata else [])
        + ([f"--min-confidence {args.min_confidence}"] if args.min_confidence is not None else [])
    )


def _saved_policy_run(
    args: argparse.Namespace,
    saved: Any,
    ds: Any,
    samples: list[Any],
    preds: list[Any],
    facts: dict[str, Any],
    overlap: str | None,
    backend_note: str,
) -> int:
    from derm_cloud.governance.referral import check_saved_policy, write_predictions

    held, payload = check_saved_policy(
        saved,
        samples,
        preds,
        dataset_name=ds.name,
        source=str(args.dataset),
        policy_file=str(args.policy),
        overlap=overlap,
    )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_predictions(
            out / "predictions.jsonl", ((s.image_id, s.label, p) for s, p in zip(samples, preds, strict=True)),
            model_facts=facts,
        )  # fmt: skip
        (out / "policy-evaluation.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", "utf-8")
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
        return 0
    print(f"Saved policy {args.policy} on {ds.name}: {len(samples)} images, {backend_note}, model {preds[0].model_id}")
    print(f"Policy: {saved.policy.describe()}")
    for target in held.points:
        print(f"  {held.headline(target)}")
    mel_expected = (saved.expected.get("mel") or {}).get("sensitivity")
    if mel_expected is not None:
        print(f"  expected when fitted (out of sample): melanoma sensitivity {float(mel_expected):.3f}")
    for note in held.notes:
        print(f"note: {note}")
    if args.out:
        print(f"wrote {Path(args.out) / 'policy-evaluation.json'}")
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
