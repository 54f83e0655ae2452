"""Check that built book pages are seen whole at a given window width (default 1280 px).

Each page is opened in headless Chromium (the system ``chromium``; no Python driver, no
network). A copy of the page gets a ``<base>`` pointing at the original folder (so its CSS
and images load) and a small script that, once the page has loaded, lists

* every ``<table>`` whose ``scrollWidth`` exceeds its ``clientWidth``, or that sits in a
  box (up to the article) that scrolls sideways because of it, or that is wider than the
  article column;
* every ``<img>`` wider than its container or than the article column.

The list is written into the DOM, which ``chromium --dump-dom`` prints; this script parses it.
Exit status 1 when any page has an overflow, 2 when Chromium is missing or a page could not
be measured.

    python scripts/check_pages.py _build/html/results_main.html ...
    python scripts/check_pages.py --dir _build/html --pages results_main gallery
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS_PAGES = ("results_main", "results_text", "results_beta", "results_ablations",
                 "results_beyond", "results_metrics", "results_passes", "gallery", "claims",
                 "faithfulness")
MARK = "check-pages-result"

# Runs in the page after load: measures, then writes JSON into <pre id=MARK>.
PROBE = r"""
<script>
(function () {
  function label(el) {
    var s = el.tagName.toLowerCase();
    if (el.id) s += '#' + el.id;
    if (el.className && typeof el.className === 'string')
      s += '.' + el.className.trim().split(/\s+/).join('.');
    return s;
  }
  function where(el) {
    var sec = el.closest('section');
    var h = sec ? sec.querySelector('h1,h2,h3,h4') : null;
    var t = h ? h.textContent.replace(/[#¶]/g, '').trim() : '';
    return t.slice(0, 80);
  }
  function run() {
    var out = {width: window.innerWidth, column: null, tables: 0, images: 0, problems: []};
    var article = document.querySelector('article.bd-article, main#main-content, main, body');
    // the text column: a notebook cell's width (jupyter-book), else the section's / article's
    function column(el) {
      var c = el.closest('div.cell') || el.closest('section') || article;
      return c.clientWidth;
    }
    var first = document.querySelector('div.cell');
    out.column = first ? first.clientWidth : article.clientWidth;
    var tables = document.querySelectorAll('table');
    out.tables = tables.length;
    tables.forEach(function (t, i) {
      var col = column(t);
      var w = Math.round(t.getBoundingClientRect().width);
      var what = 'table ' + (i + 1) + ' (' + label(t) + ') in "' + where(t) + '"';
      if (t.scrollWidth > t.clientWidth + 1) {
        out.problems.push(what + ': scrollWidth ' + t.scrollWidth + ' > clientWidth ' +
                          t.clientWidth);
        return;
      }
      for (var a = t.parentElement; a && a !== article.parentElement; a = a.parentElement) {
        if (a.scrollWidth > a.clientWidth + 1 && getComputedStyle(a).overflowX !== 'visible') {
          out.problems.push(what + ': scrolls sideways in ' + label(a) + ' (scrollWidth ' +
                            a.scrollWidth + ' > clientWidth ' + a.clientWidth + ')');
          return;
        }
      }
      if (w > col + 1)
        out.problems.push(what + ': ' + w + ' px wide, column ' + col + ' px');
    });
    var imgs = document.querySelectorAll('img');
    imgs.forEach(function (im, i) {
      var r = im.getBoundingClientRect();
      if (r.width === 0) return;
      var col = column(im);
      out.images += 1;
      var box = im.parentElement;
      var what = 'img ' + (i + 1) + ' (' + (im.getAttribute('alt') || im.src.split('/').pop())
                 .slice(0, 60) + ') in "' + where(im) + '"';
      if (r.width > box.clientWidth + 1)
        out.problems.push(what + ': ' + Math.round(r.width) + ' px wide, container ' +
                          box.clientWidth + ' px');
      else if (r.width > col + 1)
        out.problems.push(what + ': ' + Math.round(r.width) + ' px wide, column ' + col +
                          ' px');
    });
    var pre = document.createElement('pre');
    pre.id = '""" + MARK + r"""';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  if (document.readyState === 'complete') run(); else window.addEventListener('load', run);
})();
</script>
"""


def chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def measure(page: Path, width: int = 1280, height: int = 2000, browser: str | None = None,
            timeout: float = 120) -> dict:
    """Open ``page`` at ``width`` px and return the probe's result (raises on failure)."""
    browser = browser or chromium()
    if browser is None:
        raise FileNotFoundError("chromium not found (install the Debian package 'chromium')")
    page = page.resolve()
    text = page.read_text(encoding="utf-8")
    base = f'<base href="{page.parent.as_uri()}/">'
    text = re.sub(r"(<head[^>]*>)", lambda m: m.group(1) + base, text, count=1, flags=re.I)
    if "</body>" in text:
        i = text.rindex("</body>")
        text = text[:i] + PROBE + text[i:]
    else:
        text += PROBE
    with tempfile.TemporaryDirectory(prefix="check_pages_") as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(text, encoding="utf-8")
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--hide-scrollbars", f"--user-data-dir={tmp}/profile",
               f"--window-size={width},{height}", "--virtual-time-budget=5000",
               "--run-all-compositor-stages-before-draw", "--allow-file-access-from-files",
               "--dump-dom", copy.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    m = re.search(rf'<pre id="{MARK}"[^>]*>(.*?)</pre>', proc.stdout, re.S)
    if not m:
        raise RuntimeError(f"{page}: no measurement from chromium (rc {proc.returncode}): "
                           f"{proc.stderr.strip()[-500:]}")
    return json.loads(html.unescape(m.group(1)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pages", nargs="*", type=Path, help="HTML files to check")
    ap.add_argument("--dir", type=Path, help="built HTML folder (e.g. _build/html)")
    ap.add_argument("--pages", dest="names", nargs="+", default=None,
                    help=f"page names under --dir (default: {' '.join(RESULTS_PAGES)})")
    ap.add_argument("--width", type=int, default=1280)
    args = ap.parse_args(argv)
    pages = list(args.pages)
    if args.dir is not None:
        pages += [args.dir / f"{n}.html" for n in (args.names or RESULTS_PAGES)]
    if not pages:
        ap.error("no pages: give HTML files or --dir")
    if chromium() is None:
        print("check_pages: chromium not found (Debian package 'chromium')", file=sys.stderr)
        return 2
    bad, broken = 0, 0
    for page in pages:
        if not page.is_file():
            print(f"MISSING {page}")
            broken += 1
            continue
        try:
            r = measure(page, width=args.width)
        except Exception as exc:  # noqa: BLE001 - report every page
            print(f"ERROR   {page}: {exc}")
            broken += 1
            continue
        status = "OK     " if not r["problems"] else "FAIL   "
        print(f"{status}{page} ({r['tables']} tables, {r['images']} images, "
              f"column {r['column']} px at {r['width']} px)")
        for p in r["problems"]:
            print(f"    {p}")
        bad += bool(r["problems"])
    if broken:
        return 2
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
