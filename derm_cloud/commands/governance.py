"""`derm-cloud governance referral | notes | model-cards`: human-in-the-loop and register entries from data."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
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
    r.add_argument(
        "--backend",
        "-b",
        help="backend to run (default local-onnx); with --predictions, the backend whose rows to read from a "
        "comparator's predictions.jsonl that holds several",
    )
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
    r.add_argument(
        "--predictions",
        help="reuse a predictions.jsonl instead of running: one written by an earlier --out, or a `derm-cloud "
        "compare` run's (its report.json beside it names the model)",
    )
    r.add_argument(
        "--fit",
        choices=["point", "conservative"],
        default="point",
        help="point: the threshold reaches the target on the fitting data (default); conservative: the lower 95%% "
        "bound of its out-of-sample sensitivity reaches it (nested lesion-disjoint folds), at a higher referral rate",
    )
    r.add_argument(
        "--margin",
        type=float,
        help="conservative fit: the inner folds aim the lower bound at target + this (default 0.0075, chosen on "
        "dev.csv)",
    )
    r.add_argument("--inner-folds", type=int, default=5, help="conservative fit: folds that choose the threshold")
    r.add_argument(
        "--inner-repeats", type=int, default=5, help="conservative fit: deals of the inner folds averaged (default 5)"
    )
    r.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="with --policy: apply it even to predictions of another model or metadata mode (recorded in the result)",
    )
    held = r.add_mutually_exclusive_group()
    held.add_argument(
        "--folds",
        type=int,
        default=5,
        help="lesion-disjoint folds for the out-of-sample (cross-fitted) headline; the outer folds of a "
        "conservative fit (default 5)",
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
    from derm_cloud.governance.referral import SavedPolicy, fit_referral, parse_prevalence, write_referral_outputs
    from derm_cloud.governance.referral.conservative import DEFAULT_MARGIN
    from derm_cloud.governance.referral.printout import fit_lines

    if not 0 < args.target_sensitivity <= 1:
        raise ConfigError(f"--target-sensitivity must be in (0, 1], got {args.target_sensitivity}")
    if args.fit == "point" and (args.margin is not None):
        raise ConfigError("--margin applies to the conservative fit; add --fit conservative")
    if args.inner_folds < 2 or args.inner_repeats < 1:
        raise ConfigError(f"--inner-folds must be >= 2 and --inner-repeats >= 1, got {args.inner_folds}, "
                          f"{args.inner_repeats}")  # fmt: skip
    saved = SavedPolicy.load(args.policy) if args.policy else None
    ds = load_dataset(args.dataset)
    if args.limit:
        ds = ds.subset(args.limit, seed=args.seed)
    samples = [s for s in ds if s.label is not None]
    if not samples:
        raise ConfigError(f"{ds.name} has no labels; the referral evaluation needs a labelled dataset")
    if args.predictions:
        preds, facts, identity = _stored_predictions(args, samples)
        backend_note = f"predictions of {identity.backend or 'one backend'} from {args.predictions}"
    else:
        # A saved policy is checked against the backend before any image is sent: a refusal costs no run.
        check = (lambda who: saved.check(who, allow_mismatch=args.allow_mismatch)) if saved is not None else None
        preds, facts, identity = _run_backend(args, samples, check)
        backend_note = f"backend {identity.backend}"
    # Checked for stored predictions too: the facts travel in the predictions file's header, and without them
    # the image ids alone still reveal HAM10000 images.
    overlap = dataset_overlap_warning(facts, ds)
    if saved is not None:
        return _saved_policy_run(args, saved, ds, samples, preds, (facts, identity), overlap, backend_note)
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
        fit=args.fit,
        margin=DEFAULT_MARGIN if args.margin is None else args.margin,
        inner_folds=args.inner_folds,
        inner_repeats=args.inner_repeats,
    )
    ev, held = fit.evaluation, fit.held_out
    if overlap:
        ev.notes.insert(0, f"Training-data overlap: {overlap}")
    if identity.metadata_mode is None or not (identity.fingerprint or identity.model_id):
        ev.notes.insert(0, f"{args.predictions} records no model or metadata mode (a file without its header, or a "
                        "comparison without report.json beside it): the saved policy will be refused on any "
                        "predictions unless --allow-mismatch; refit from a file that records them")  # fmt: skip
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
            identity=identity,
        )
    if args.json:
        extra = {"conservative": fit.conservative.to_dict()} if fit.conservative is not None else {}
        out = {**ev.to_dict(), "out_of_sample": held.to_dict(), **extra, "model": identity.to_dict()}
        print(json.dumps(out, indent=2, default=str))
        return 0
    print("\n".join(fit_lines(fit, dataset_name=ds.name, source_note=backend_note, identity=identity)))
    if args.out:
        print(f"wrote {Path(args.out) / 'referral.json'} (cite it with `derm-cloud governance notes RUN --referral`)")
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run, recorded in `referral.json`."""
    source = [f"--predictions {args.predictions}"] if args.predictions else []
    if args.backend or not args.predictions:
        source.append(f"--backend {args.backend or 'local-onnx'}")
    conservative = [f"--inner-folds {args.inner_folds}", f"--inner-repeats {args.inner_repeats}"]
    if args.margin is not None:
        conservative.insert(0, f"--margin {args.margin}")
    fit = [f"--fit {args.fit}"] + (conservative if args.fit == "conservative" else [])
    return " ".join(
        ["derm-cloud governance referral", *source]
        + [f"-o {o}" for o in args.option]
        + [f"--dataset {args.dataset}", f"--target-sensitivity {args.target_sensitivity}"]
        + ([f"--limit {args.limit} --seed {args.seed}"] if args.limit else [f"--seed {args.seed}"])
        + ([f"--calibration-split {args.calibration_split}"] if args.calibration_split else [f"--folds {args.folds}"])
        + fit
        + (["--no-metadata"] if args.no_metadata else [])
        + ([f"--min-confidence {args.min_confidence}"] if args.min_confidence is not None else [])
    )


def _saved_policy_run(
    args: argparse.Namespace,
    saved: Any,
    ds: Any,
    samples: list[Any],
    preds: list[Any],
    model: tuple[dict[str, Any], Any],
    overlap: str | None,
    backend_note: str,
) -> int:
    from derm_cloud.governance.referral import check_saved_policy, write_predictions
    from derm_cloud.governance.referral.printout import saved_policy_lines

    facts, identity = model
    held, payload = check_saved_policy(
        saved,
        samples,
        preds,
        identity=identity,
        dataset_name=ds.name,
        source=str(args.dataset),
        policy_file=str(args.policy),
        overlap=overlap,
        allow_mismatch=args.allow_mismatch,
    )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_predictions(
            out / "predictions.jsonl", ((s.image_id, s.label, p) for s, p in zip(samples, preds, strict=True)),
            model_facts=facts, identity=identity,
        )  # fmt: skip
        (out / "policy-evaluation.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", "utf-8")
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
        return 0
    lines = saved_policy_lines(
        saved, held, policy_file=str(args.policy), dataset_name=ds.name, source_note=backend_note, identity=identity
    )
    print("\n".join(lines))
    if args.out:
        print(f"wrote {Path(args.out) / 'policy-evaluation.json'}")
    return 0


def _stored_predictions(args: argparse.Namespace, samples: list[Any]) -> tuple[list[Any], dict[str, Any], Any]:
    """The predictions of `samples` from `--predictions` (either layout), their facts and identity."""
    from derm_cloud.governance.referral import ModelIdentity, load_predictions

    found = load_predictions(args.predictions, backend=args.backend)
    missing = [s.image_id for s in samples if s.image_id not in found.predictions]
    if missing:
        failed = [i for i in missing if i in found.failed]
        if failed:
            kinds = sorted({found.failed[i] for i in failed})
            raise ConfigError(
                f"{args.predictions}: backend {found.identity.backend if found.identity else '?'} has no answer for "
                f"{len(failed)} of the {len(samples)} images ({', '.join(kinds)}; e.g. {failed[0]}); resume or "
                "rerun the comparison until every image is answered"
            )
        hint = ""
        if found.run.get("limit"):
            hint = (
                f"; the comparison used a subset (limit {found.run['limit']}, seed {found.run.get('seed', 0)}): pass "
                f"--limit {found.run['limit']} --seed {found.run.get('seed', 0)} with the same --dataset"
            )
        raise ConfigError(
            f"{args.predictions} has no prediction for {len(missing)} of the {len(samples)} images (e.g. "
            f"{missing[0]}){hint}"
        )
    identity = found.identity or ModelIdentity(args.backend, None, None, None)
    return [found.predictions[s.image_id] for s in samples], found.model_facts, identity


def _run_backend(
    args: argparse.Namespace, samples: list[Any], check: Callable[[Any], object] | None = None
) -> tuple[list[Any], dict[str, Any], Any]:
    import derm_cloud
    from derm_cloud.commands.classify import parse_options
    from derm_cloud.compare.run.facts import model_fingerprint
    from derm_cloud.governance.referral import ModelIdentity
    from derm_cloud.types import PatientMetadata

    preds = []
    step = max(1, args.batch_size)
    backend = args.backend or "local-onnx"
    with derm_cloud.create(backend, **parse_options(args.option, backend)) as clf:
        info = clf.describe()
        facts = dict(info.model_facts)
        # The fingerprint the comparator's same-model check uses: the SHA-256 of the spec and weights.
        identity = ModelIdentity(
            backend=backend,
            model_id=info.model_id,
            fingerprint=model_fingerprint(facts.get("model_dir")),
            metadata_mode="used" if clf.uses_metadata and not args.no_metadata else "blind",
        )
        if check is not None:
            check(identity)
        # Chunks keep memory flat: predict_batch decodes every image it is given before it starts.
        for lo in range(0, len(samples), step):
            chunk = samples[lo : lo + step]
            metas = [PatientMetadata() if args.no_metadata else s.metadata for s in chunk]
            preds.extend(clf.predict_batch([s.read_bytes() for s in chunk], metas, batch_size=step))
            print(f"\r  {min(lo + step, len(samples))}/{len(samples)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return preds, facts, identity


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
