"""How the conservative referral fit's defaults were chosen: nested folds on the development set, several seeds.

For each variant (point fit; conservative with a number of inner deals and a margin) and each outer seed, the
lower 95% bound of the out-of-sample melanoma sensitivity (outer folds of the nested cross-fitting) and the
out-of-sample referral rate; printed as the Markdown table in docs/referral.md. Reads stored predictions, so it
runs in seconds; use it on the development set only (images kept for checking must not choose the method):

    derm-cloud governance referral -o model_dir=sklesion --dataset $DERM_CLOUD_DATA/ham10000/dev.csv \\
        --skin-tone none --out runs/referral
    python scripts/referral_tuning.py --predictions runs/referral/predictions.jsonl \\
        --dataset $DERM_CLOUD_DATA/ham10000/dev.csv
"""

from __future__ import annotations

import argparse
import statistics

from derm_cloud.data import load_dataset
from derm_cloud.governance.referral import cross_fit_referral, load_predictions, nested_conservative_referral

#: (label, inner deals, margin); ``None`` deals = the point fit.
VARIANTS: tuple[tuple[str, int | None, float], ...] = (
    ("point fit", None, 0.0),
    ("conservative, 1 deal, margin 0", 1, 0.0),
    ("conservative, 1 deal, margin 0.005", 1, 0.005),
    ("conservative, 5 deals, margin 0", 5, 0.0),
    ("conservative, 5 deals, margin 0.005", 5, 0.005),
    ("conservative, 5 deals, margin 0.0075", 5, 0.0075),
    ("conservative, 5 deals, margin 0.01", 5, 0.01),
    ("conservative, 10 deals, margin 0.005", 10, 0.005),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", required=True, help="a referral run's predictions.jsonl of the dataset")
    parser.add_argument("--dataset", required=True, help="the development set (labels and lesion ids)")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--seeds", type=int, default=10, help="outer seeds 0..N-1")
    args = parser.parse_args()
    samples = [s for s in load_dataset(args.dataset) if s.label is not None]
    found = load_predictions(args.predictions).predictions
    preds = [found[s.image_id] for s in samples]
    labels = [str(s.label) for s in samples]
    lesions = [s.lesion_id for s in samples]
    print("| variant | lower bound, min / median | seeds reaching the target | referral rate (median) | shipped t |")
    print("|---|---|---|---|---|")
    for label, deals, margin in VARIANTS:
        bounds, rates, shipped = [], [], []
        for seed in range(args.seeds):
            if deals is None:
                point = cross_fit_referral(preds, labels, lesions, target_sensitivity=args.target, seed=seed)
                mel = point.points["mel"]
                shipped.append(None)
            else:
                fit = nested_conservative_referral(
                    preds, labels, lesions, target_sensitivity=args.target, margin=margin, seed=seed, repeats=deals
                )
                mel = fit.held_out.points["mel"]
                shipped.append(fit.threshold)
            assert mel.sensitivity_ci is not None
            bounds.append(mel.sensitivity_ci[0])
            rates.append(mel.referral_rate)
        reached = sum(b >= args.target for b in bounds)
        ts = sorted({round(t, 4) for t in shipped if t is not None})
        print(
            f"| {label} | {min(bounds):.3f} / {statistics.median(bounds):.3f} | {reached} of {args.seeds} | "
            f"{statistics.median(rates):.3f} | {', '.join(map(str, ts)) or 'n/a'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
