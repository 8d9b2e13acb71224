"""What cheap checks catch of JPEG damage that libjpeg decodes without a warning, at what false-positive rate and cost.

Corpus (seeded; built in memory at run time, nothing written): every HAM10000 dev image as stored, the same
images re-encoded the ways other encoders write JPEGs (progressive, optimised Huffman tables, a restart marker
every MCU row, q75 4:2:0), and clean non-dermoscopy pictures (flat grey, gradients, stripes, a vignette, a
straight horizontal split, each baseline, progressive and optimised). Each dev-image file gets seeded damage in
its entropy-coded data (``derm_cloud.testing.image_corpus.scan_damage``): 512 and 4096 zeroed bytes, a 512-byte
sector copied from elsewhere in the scan, single bit flips, and cuts with and without a forged end marker.

For each damaged file: whether the existing checks (marker structure + libjpeg-turbo's strict Huffman decode)
refuse it; if not, whether each new check does (zero fill, colour step, flat band, and a restart-marker count
measured as a candidate), and how much of the picture changed (share of pixels off by more than 10 levels
against the clean decode; "material" is at least 1 %). For each clean file: whether any check refuses it, and
the largest clean scores against the thresholds. Rates come with 95 % Wilson intervals.

Cost, interleaved per round with the order rotated, medians over rounds, load average before and after
(``--rounds``):

* old entropy check: the call ``main`` made, ``simplejpeg.decode_jpeg(..., colorspace="GRAY", min_factor=8)``:
  simplejpeg ignores ``min_factor`` without a minimum size, so it decoded at full scale (the baseline, sharing
  no code with what is measured);
* new damage check: zero fill, the strict decode at true 1/8 scale in colour, and the DC-image checks;
* local path: a full strict RGB decode alone, and with the DC-image checks on its MCU means added.

    python benchmarks/jpeg_damage.py [--images 1321] [--seed 0] [--rounds 200] [--out table.md]
    python benchmarks/jpeg_damage.py --skip-corpus --classify sklesion   # top-class changes, and the cost

Real images: HAM10000, Tschandl et al. 2018, CC BY-NC 4.0 (read in place, never copied).
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import math
import os
import re
import statistics
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image

from derm_cloud.errors import InvalidImageError
from derm_cloud.image_bytes import parse_jpeg, verify_jpeg_bytes, verify_jpeg_entropy
from derm_cloud.jpeg_damage import block_means, dc_scores, frame_mcu, zero_fill
from derm_cloud.testing.image_corpus import reencodings, scan_damage, synthetic_photos

ROOT = Path(__file__).resolve().parents[1]
DEV_CSV = Path(os.environ.get("DERM_CLOUD_DATA", ROOT.parent / "shared" / "data")) / "ham10000" / "dev.csv"
CHECKS = ("zero fill", "colour step", "shipped", "flat band", "restart count")


def wilson(hits: int, n: int) -> str:
    """``hits/n`` with its percentage and 95 % Wilson score interval."""
    if n == 0:
        return "-"
    z, p = 1.96, hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{hits}/{n} = {100 * p:.1f} % [{100 * max(0.0, centre - half):.1f}, {100 * min(1.0, centre + half):.1f}]"


def existing_refuses(data: bytes) -> bool:
    """The checks before this work: marker structure, then libjpeg's strict Huffman decode."""
    try:
        info = parse_jpeg(data)
        simplejpeg.decode_jpeg(data[: info.end], colorspace="GRAY", min_width=1, min_height=1, strict=True)
    except (InvalidImageError, ValueError):
        return True
    return False


def restart_count_wrong(data: bytes) -> bool:
    """Candidate check: as many restart markers as the frame size and restart interval call for (first scan)."""
    dri = data.find(b"\xff\xdd")
    sof = re.search(rb"\xff[\xc0\xc1]", data)
    if dri < 0 or sof is None:
        return False
    interval = struct.unpack_from(">H", data, dri + 4)[0]
    height, width = struct.unpack_from(">HH", data, sof.start() + 5)
    across, down = frame_mcu(data)
    mcus = math.ceil(width / (8 * across)) * math.ceil(height / (8 * down))
    found = len(re.findall(rb"\xff[\xd0-\xd7]", data[data.find(b"\xff\xda") :]))
    return bool(interval) and found != math.ceil(mcus / interval) - 1


BAND_BLOCKS, BAND_TEXTURE = 10, 4.0


def flat_band_score(blocks: np.ndarray, mcu_rows: int) -> float:
    """Candidate check: the texture around the most textured run of >= 10 identical blocks along a row.

    Zero bits decode, under common tables, to blocks repeating the previous DC level. The run's texture is
    compared with the rows one MCU above and below (the rows inside its MCU row are filler too).
    """
    values = blocks.astype(np.float32).reshape(blocks.shape[0], blocks.shape[1], -1)
    rows = values.shape[0]
    steps = np.abs(np.diff(values, axis=1)).sum(axis=2)  # (rows, width - 1): texture between neighbours
    same = np.abs(np.diff(values, axis=1)).max(axis=2) <= 1.0
    best = 0.0
    for row in range(mcu_rows, rows - mcu_rows):
        edges = np.diff(np.concatenate([[0], same[row].view(np.int8), [0]]))
        for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            if stop - start + 1 >= BAND_BLOCKS:
                around = min(steps[row - mcu_rows, start:stop].mean(), steps[row + mcu_rows, start:stop].mean())
                best = max(best, float(around))
    return best


def new_checks(data: bytes) -> dict[str, Any]:
    """What each new check says of one file the existing checks accept (cloud path and local path)."""
    info = parse_jpeg(data)
    mcu_rows = frame_mcu(data)[1]
    colour = "GRAY" if info.components == 1 else "RGB"
    eighth = simplejpeg.decode_jpeg(data, colorspace=colour, min_width=1, min_height=1, strict=True)
    cloud = dc_scores(eighth, mcu_rows)
    full = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    local = dc_scores(block_means(full), mcu_rows)
    found = {
        "zero fill": zero_fill(data, info.scan_start, info.end) is not None,
        "colour step": cloud.step > cloud.step_threshold,
        "restart count": restart_count_wrong(data),
    }
    band = flat_band_score(eighth, mcu_rows)
    found["flat band"] = band > BAND_TEXTURE
    found["shipped"] = found["zero fill"] or found["colour step"]
    local_refuses = found["zero fill"] or local.step > local.step_threshold
    return {**found, "paths disagree": local_refuses != found["shipped"], "scores": cloud, "band": band, "full": full}


def changed_share(full: np.ndarray, clean: np.ndarray) -> float:
    if full.shape != clean.shape:
        return 1.0
    return float((np.abs(full.astype(np.int16) - clean).max(axis=2) > 10).mean())


Tally = dict[Any, Counter[str]]


def run_corpus(rows: list[dict[str, str]], seed: int) -> tuple[Tally, Tally, dict[str, Any]]:
    damaged: Tally = collections.defaultdict(collections.Counter)
    clean_sets: Tally = collections.defaultdict(collections.Counter)
    extremes: dict[str, Any] = {"step": {}, "band": (0.0, ""), "zero run": 0}

    def clean_file(group: str, name: str, data: bytes) -> None:
        counts = clean_sets[group]
        counts["files"] += 1
        if existing_refuses(data):
            counts["existing"] += 1
            return
        found = new_checks(data)
        for check in CHECKS:
            counts[check] += found[check]
        counts["paths disagree"] += found["paths disagree"]
        scores = found["scores"]
        key = f"{scores.width} blocks wide" if scores.width <= 80 else "wider"
        if scores.step > extremes["step"].get(key, (0.0, ""))[0]:
            extremes["step"][key] = (scores.step, f"{name}; {scores.step_threshold:.3f} refuses")
        if found["band"] > extremes["band"][0]:
            extremes["band"] = (found["band"], name)
        scan = data[parse_jpeg(data).scan_start : -2]
        extremes["zero run"] = max(extremes["zero run"], max(map(len, re.findall(rb"\x00+", scan)), default=0))

    for index, row in enumerate(rows):
        original = (DEV_CSV.parent / row["file"]).read_bytes()
        size = "600x450" if row["variant"].startswith("original") else "224x224"
        for encoding, data in {"as stored": original, **reencodings(original)}.items():
            clean_file(f"dev {size}, {encoding}", row["image_id"], data)
            clean_pixels = simplejpeg.decode_jpeg(data, colorspace="RGB")
            for kind, bad in scan_damage(data, seed * 100_003 + index):
                counts = damaged[(size, kind, encoding)]
                counts["files"] += 1
                if existing_refuses(bad):
                    counts["existing"] += 1
                    continue
                found = new_checks(bad)
                material = changed_share(found["full"], clean_pixels) >= 0.01
                counts["accepted"] += 1
                counts["material"] += material
                counts["paths disagree"] += found["paths disagree"]
                for check in CHECKS:
                    counts[check] += found[check]
                    counts[f"{check} material"] += found[check] and material
                    counts[f"{check} beyond shipped"] += found[check] and material and not found["shipped"]
        if index % 100 == 99:
            print(f"  {index + 1}/{len(rows)} images", file=sys.stderr)
    for name, data in synthetic_photos().items():
        clean_file("synthetic 600x450", name, data)
    for name, data in synthetic_photos(224, 224).items():
        clean_file("synthetic 224x224", name, data)
    return damaged, clean_sets, extremes


def _timed_rounds(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def measure_cost(rows: list[dict[str, str]], rounds: int) -> list[str]:
    dermoscopy = (DEV_CSV.parent / rows[0]["file"]).read_bytes()
    # A phone photo as in backend_overhead.py: 4000x3000, sensor-like noise, q88 4:2:0.
    rgb = Image.open(io.BytesIO(dermoscopy)).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    noisy = np.asarray(rgb, np.int16) + np.random.default_rng(0).normal(0, 4, (3000, 4000, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=88)
    lines = [
        "| image | contender | median ms | min ms | p95 ms | ratio, median of rounds [95 % interval] |",
        "|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    for label, data, n in (
        ("dermoscopy 600x450", dermoscopy, rounds),
        ("phone 4000x3000", buf.getvalue(), rounds // 10),
    ):
        info = parse_jpeg(data)
        mcu_rows = frame_mcu(data)[1]
        contenders = {
            "old entropy check (full-scale GRAY decode)": lambda d=data: simplejpeg.decode_jpeg(
                d, colorspace="GRAY", min_factor=8, strict=True
            ),
            "new damage check (zero fill + 1/8 colour decode + colour step)": lambda d=data, i=info: (
                verify_jpeg_bytes(d, i),
                verify_jpeg_entropy(d[: i.end], i.components),
            ),
            "local path: full strict RGB decode": lambda d=data: simplejpeg.decode_jpeg(d, colorspace="RGB"),
            "local path: full decode + colour step on block means": lambda d=data, v=mcu_rows: dc_scores(
                block_means(simplejpeg.decode_jpeg(d, colorspace="RGB")), v
            ),
        }
        _timed_rounds(contenders, 5)  # warm-up
        times = _timed_rounds(contenders, max(n, 5))
        names = list(contenders)
        baseline_of = {names[1]: names[0], names[3]: names[2]}  # new check / old check, with check / decode alone
        for name, values in times.items():
            p95 = sorted(values)[int(0.95 * (len(values) - 1))]
            ratio = "baseline"
            if name in baseline_of:
                per_round = np.asarray(values) / np.asarray(times[baseline_of[name]])
                medians = np.median(rng.choice(per_round, (1000, len(per_round))), axis=1)
                low, high = np.quantile(medians, [0.025, 0.975])
                ratio = f"{np.median(per_round):.2f}x [{low:.2f}, {high:.2f}]"
            lines.append(
                f"| {label} | {name} | {statistics.median(values):.2f} | {min(values):.2f} | {p95:.2f} | {ratio} |"
            )
    return lines


def report(
    damaged: dict[Any, Counter[str]], clean_sets: dict[str, Counter[str]], extremes: dict[str, Any]
) -> list[str]:
    lines = [
        "Damaged files the existing checks accept, and what each new check refuses of them "
        "(material: >= 1 % of pixels off by > 10 levels):",
        "",
        "| image | damage | encoding | files | refused by existing | accepted | material | "
        + " | ".join(f"{c} (material)" for c in CHECKS)
        + " | shipped (all accepted) | cloud/local paths disagree |",
        "|---|---|---|---|---|---|---|" + "---|" * (len(CHECKS) + 2),
    ]

    def row(size: str, kind: str, encoding: str, c: Counter[str]) -> str:
        checks = " | ".join(wilson(c[f"{check} material"], c["material"]) for check in CHECKS)
        return (
            f"| {size} | {kind} | {encoding} | {c['files']} | {c['existing']} | {c['accepted']} | {c['material']} "
            f"| {checks} | {wilson(c['shipped'], c['accepted'])} | {c['paths disagree']} |"
        )

    by_size: dict[str, Counter[str]] = collections.defaultdict(collections.Counter)
    totals: Counter[str] = collections.Counter()
    all_refused = []
    for (size, kind, encoding), c in sorted(damaged.items()):
        by_size[size].update(c)
        totals.update(c)
        if c["accepted"]:
            lines.append(row(size, kind, encoding, c))
        else:
            all_refused.append(f"{size} {kind} {encoding} ({c['files']})")
    for size, c in sorted(by_size.items()):
        lines.append(row(size, "all", "all", c))
    lines.append(row("all", "all", "all", totals))
    lines += ["", "Refused in full by the existing checks: " + ", ".join(all_refused) + "."]
    beyond = ", ".join(f"{check} {totals[f'{check} beyond shipped']}" for check in ("flat band", "restart count"))
    lines += ["", f"Material damage a candidate refuses that the shipped checks accept: {beyond}."]
    lines += [
        "",
        "Clean files refused (false positives):",
        "",
        "| clean set | files | refused by existing | " + " | ".join(CHECKS) + " | cloud/local paths disagree |",
        "|---|---|---|" + "---|" * (len(CHECKS) + 1),
    ]
    for group, c in sorted(clean_sets.items()):
        checks = " | ".join(wilson(c[check], c["files"]) for check in CHECKS)
        lines.append(f"| {group} | {c['files']} | {c['existing']} | {checks} | {c['paths disagree']} |")
    lines += ["", "Largest scores of a clean file:", ""]
    for key, (score, name) in sorted(extremes["step"].items()):
        lines.append(f"- colour step, {key}: {score:.3f} ({name})")
    lines.append(
        f"- flat band texture: {extremes['band'][0]:.2f} ({extremes['band'][1] or '-'}; {BAND_TEXTURE} refuses)"
    )
    lines.append(
        f"- longest zero run in a clean scan: {extremes['zero run']} bytes (32 refuses where tables forbid it)"
    )
    return lines


def class_changes(rows: list[dict[str, str]], seed: int, model_dir: str) -> list[str]:
    """Which damaged 600x450 files (as stored) the existing checks accept change a model's top class, and
    whether the new checks refuse them. The damaged pixels are classified as a decoder shows them."""
    import derm_cloud

    clf = derm_cloud.create("local-onnx", model_dir=model_dir)

    def top(image: Any) -> tuple[str, float]:
        probabilities = clf.predict(image).probabilities
        best = max(probabilities, key=lambda name: probabilities[name])
        return best, probabilities[best]

    accepted, refused, changed = 0, 0, []
    for index, row in enumerate(rows):
        if not row["variant"].startswith("original"):
            continue
        data = (DEV_CSV.parent / row["file"]).read_bytes()
        before = top(data)
        for kind, bad in scan_damage(data, seed * 100_003 + index):  # the same files as the corpus
            if existing_refuses(bad):
                continue
            accepted += 1
            try:
                derm_cloud.prepare_payload(bad)
                now = "accepted"
            except InvalidImageError:
                now, refused = "refused", refused + 1
            after = top(np.asarray(Image.open(io.BytesIO(bad)).convert("RGB")))
            if after[0] != before[0]:
                changed.append(
                    f"- {row['image_id']} {kind}: {before[0]} {before[1]:.3f} -> {after[0]} {after[1]:.3f}, {now}"
                )
    return [
        f"Top class ({model_dir}) of the {accepted} damaged 600x450 files the existing checks accept: "
        f"{len(changed)} changed; the new checks refuse {refused} of the {accepted}.",
        "",
        *changed,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=0, help="dev images to use (default: all of dev.csv)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=200, help="timed rounds for 600x450 (a tenth for 12 MP)")
    parser.add_argument("--skip-corpus", action="store_true", help="measure the cost only")
    parser.add_argument("--out", type=Path, help="also write the tables to this Markdown file")
    parser.add_argument("--classify", metavar="MODEL_DIR", help="also count top-class changes (e.g. sklesion)")
    args = parser.parse_args()

    with DEV_CSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows = rows[: args.images] if args.images else rows
    load_before = os.getloadavg()
    started = time.perf_counter()
    lines = [f"jpeg_damage: {len(rows)} dev images, seed {args.seed}", ""]
    if not args.skip_corpus:
        lines += report(*run_corpus(rows, args.seed))
        lines.append("")
    if args.classify:
        lines += [*class_changes(rows, args.seed, args.classify), ""]
    lines += ["Cost per image (interleaved rounds):", "", *measure_cost(rows, args.rounds)]
    load_after = os.getloadavg()
    lines += [
        "",
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, after "
        f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; {os.cpu_count()} CPUs; "
        f"{time.perf_counter() - started:.0f} s",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
