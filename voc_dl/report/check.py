"""The report as a reader sees it: index.html opened in headless Chromium.

    python -m voc_dl.report.check [outputs/report] [--width 1280] [--screenshot docs/img/report.png]

Checks that every image loaded, that nothing is wider than a page of --width pixels (a wide table must
scroll inside its own box) and that every link points at something that exists. Exit status 1 lists what
failed; 2 means no Chromium (Debian: apt-get install -y chromium).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

# Runs in the page once it has loaded (images included) and leaves its findings in the DOM, which
# --dump-dom prints: Chromium's command line needs no driver library for that.
PROBE = """<script>addEventListener("load", () => {
  const width = document.documentElement.clientWidth;
  const result = {
    width, scrollWidth: document.documentElement.scrollWidth,
    images: [...document.images].map(i => ({src: i.getAttribute("src"), naturalWidth: i.naturalWidth})),
    wide: [...document.body.querySelectorAll("*")].filter(e => e.getBoundingClientRect().right > width + 0.5)
      .slice(0, 5).map(e => e.tagName.toLowerCase() + (e.className ? "." + e.className : "")),
  };
  const out = document.createElement("pre");
  out.id = "report-check";
  out.textContent = JSON.stringify(result);
  document.body.append(out);
});</script>"""


def chromium() -> str | None:
    return shutil.which("chromium")


def _browse(url: str, width: int, height: int, *args: str) -> str:
    # --no-sandbox: Chromium refuses to run as root with its sandbox (CI containers); it opens local files only
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={width},{height}", "--virtual-time-budget=10000", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def measure(index: Path, width: int = 1280, height: int = 1600) -> dict:
    """What the probe found in the page at a window of width x height pixels."""
    index = index.resolve()
    page = index.read_text()
    # the probe's copy lives elsewhere, so the report folder is left as it was; <base> keeps its links
    page = page.replace("<head>", f'<head><base href="{index.parent.as_uri()}/">', 1)
    page = page.replace("</body>", PROBE + "</body>", 1)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "index.html"
        probe.write_text(page)
        dom = _browse(probe.as_uri(), width, height, "--dump-dom")
    found = re.search(r'<pre id="report-check">(.*?)</pre>', dom, re.S)
    if not found:
        raise RuntimeError(f"the probe found nothing in {index}: did the page load? (DOM starts: {dom[:200]!r})")
    return json.loads(html.unescape(found.group(1)))


def broken_links(index: Path) -> list[str]:
    """Links of index.html to files or folders that do not exist (web links are not followed)."""
    hrefs = re.findall(r'(?:href|src)="([^"]*)"', index.read_text())
    local = [h for h in map(html.unescape, hrefs) if not urlparse(h).scheme and not h.startswith("#")]
    return [h for h in local if not (index.parent / unquote(h)).exists()]


def problems(index: Path, width: int = 1280) -> list[str]:
    found = measure(index, width)
    bad = [f"image {i['src']} did not load" for i in found["images"] if not i["naturalWidth"]]
    if found["scrollWidth"] > found["width"]:
        bad.append(f"the page is {found['scrollWidth']} px wide in a {found['width']} px window; too wide: "
                   f"{', '.join(found['wide'])}")
    return bad + [f"link {h} points at nothing" for h in broken_links(index)]


def screenshot(index: Path, path: Path, width: int = 1280, height: int = 1600) -> Path:
    """The top of the page as a reader's window of width x height shows it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _browse(index.resolve().as_uri(), width, height, f"--screenshot={path.resolve()}")
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", nargs="?", default="outputs/report", help="the report folder (holds index.html)")
    ap.add_argument("--width", type=int, default=1280, help="window width in pixels")
    ap.add_argument("--screenshot", type=Path, help="also save the top of the page (width x 1600) as this PNG")
    args = ap.parse_args(argv)
    index = Path(args.report) / "index.html"
    if not index.is_file():
        sys.exit(f"{index}: no such file. Fix: build the report first (make report)")
    if chromium() is None:
        print("no chromium on PATH. Fix: apt-get install -y chromium", file=sys.stderr)
        sys.exit(2)
    bad = problems(index, args.width)
    if args.screenshot:
        print(f"screenshot: {screenshot(index, args.screenshot, args.width)}")
    for line in bad:
        print(f"{index}: {line}")
    if bad:
        sys.exit(1)
    print(f"{index}: every image loaded, nothing wider than {args.width} px, every link resolves")


if __name__ == "__main__":
    main()
