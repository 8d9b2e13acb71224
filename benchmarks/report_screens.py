"""How many 1280x1000 screens a report.html takes, as a reader first sees it (folded details closed).

    DERM_CLOUD_DATA=/work/shared/data derm-cloud compare benchmarks/report-five-backends.toml -o /tmp/five
    python benchmarks/report_screens.py /tmp/five/report.html

Prints the page height in screens with folded `<details>` closed (what a reader scrolls through) and with every
one opened (everything the page holds), and the section headings visible on the first screen. Issue 20 asks
that a report for five backends of one model fit in a few screens. Needs playwright and Debian's chromium (or
DERM_CLOUD_CHROMIUM), as scripts/screenshot_report.py does; JavaScript only measures, the page needs none.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report.html written by derm-cloud compare")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    chromium = os.environ.get("DERM_CLOUD_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--headless=new"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(args.report.resolve().as_uri())
        folded = page.evaluate("document.documentElement.scrollHeight")
        first = page.evaluate(
            f"[...document.querySelectorAll('h2')].filter(h => h.getBoundingClientRect().top < {args.height})"
            ".map(h => h.textContent)"
        )
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        opened = page.evaluate("document.documentElement.scrollHeight")
        browser.close()
    print(f"{args.report}: {folded / args.height:.1f} screens of {args.width}x{args.height} ({folded} px) folded")
    print(f"  every <details> opened: {opened / args.height:.1f} screens ({opened} px)")
    print(f"  headings on the first screen: {', '.join(first) or 'none'}")


if __name__ == "__main__":
    main()
