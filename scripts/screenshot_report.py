"""Take the README's picture of a report: headless Chromium on a report.html, palette PNG under 300 KB.

    python -m derm_cloud.cli compare examples/compare-dataset.toml --limit 70 -o /tmp/report
    python scripts/screenshot_report.py /tmp/report/report.html docs/images/report.png

Needs playwright (the `dev` extra) and Debian's chromium (`apt-get install chromium`, or DERM_CLOUD_CHROMIUM).
The PNG records the run it shows (text chunk "derm-cloud run", from report.json beside the report): the README's
console excerpt must come from the same run (tests/test_docs.py checks it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

from PIL import Image, PngImagePlugin
from playwright.sync_api import sync_playwright


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report.html written by derm-cloud compare")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    chromium = os.environ.get("DERM_CLOUD_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--headless=new"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(args.report.resolve().as_uri())
        png = page.screenshot(full_page=False)
        browser.close()
    run_id = json.loads((args.report.parent / "report.json").read_text())["run"]["run_id"]
    info = PngImagePlugin.PngInfo()
    info.add_text("derm-cloud run", run_id)
    # A 128-colour palette keeps text sharp and the file small (a report page is mostly flat colour).
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128).save(args.out, optimize=True, pnginfo=info)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KB, run {run_id}")


if __name__ == "__main__":
    main()
