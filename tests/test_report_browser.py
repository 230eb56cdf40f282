"""The report page in a real browser: headless Chromium loads ``report.html`` of a small stored
run and checks what a reader would see: every figure decodes, the claims filter hides and shows
rows, sorting reorders them, nothing is wider than the window, and a screenshot is saved
(under pytest's tmp dir, and in ``$LNLAB_SCREENSHOT_DIR`` when set).

Chromium is driven from the command line (``--dump-dom`` after the page's load event, then
``--screenshot``): a check script is appended to a copy of the page and writes its results into
the DOM as JSON. Skips only when no Chromium binary is installed (CI installs Debian's).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import test_runner_toy as toy
from lnlab.experiments.framework import Experiment
from lnlab.report import build_report
from lnlab.runner import run_sweep

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def _browser() -> str | None:
    env = os.environ.get("LNLAB_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


# The checks, run in the page after its load event; results go into <pre id="lnlab-check">.
CHECKS = r"""
<script>
window.addEventListener("load", function () {
  var out = {};
  var imgs = Array.prototype.slice.call(document.querySelectorAll("figure img"));
  out.images = imgs.length;
  out.broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                   .map(function (i) { return i.alt; });
  function visible() {
    var rows = document.querySelectorAll("#claims-table tbody tr");  // in the current order
    return Array.prototype.filter.call(rows, function (r) {
      return !r.hidden && r.offsetParent !== null;
    }).map(function (r) { return r.cells[0].querySelector("b").textContent; });
  }
  function pick(key, value) {
    var s = document.getElementById("filter-" + key);
    s.value = value;
    s.dispatchEvent(new Event("change"));
  }
  out.all = visible();
  pick("kind", "check"); out.checks = visible();
  pick("kind", ""); pick("verdict", "supported"); out.supported = visible();
  pick("verdict", ""); out.reset = visible();
  out.shown_text = document.getElementById("claims-shown").textContent;
  var nhead = document.querySelector("#claims-table thead th:nth-child(9)");
  nhead.click(); nhead.click();  // n, descending
  var idhead = document.querySelector("#claims-table thead th:nth-child(1)");
  idhead.click();  // id, ascending
  out.sorted_by_id = visible();
  var width = document.documentElement.clientWidth;
  out.width = width;
  out.scroll_width = document.documentElement.scrollWidth;
  out.overflow = [];
  document.querySelectorAll("body *").forEach(function (el) {
    if (el.closest(".scroll") || el.closest("dialog") || el.tagName === "SCRIPT") { return; }
    var r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > width + 0.5) {
      out.overflow.push(el.tagName + (el.id ? "#" + el.id : "") + " right=" + r.right);
    }
  });
  out.height = document.documentElement.scrollHeight;
  var box = document.getElementById("lightbox");
  imgs[0].click();  // a figure opens at full size in the lightbox, a click closes it
  out.lightbox = [box.open, box.querySelector("img").src === imgs[0].src];
  box.click();
  out.lightbox.push(box.open);
  out.toc = Array.prototype.map.call(document.querySelectorAll("nav.toc a"), function (a) {
    return [a.getAttribute("href"), !!document.getElementById(a.getAttribute("href").slice(1))];
  });
  var pre = document.createElement("pre");
  pre.id = "lnlab-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _toy(name: str) -> Experiment:
    assert name == "toy"
    return Experiment.from_module(toy)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    run_sweep(out, "toy", "test_runner_toy", toy.sweep("quick", [0, 1, 2]), scale="quick",
              seeds=[0, 1, 2], versions={"torch": "T"}, progress=False)
    return build_report(out, resolve=_toy)["report.html"]


@pytest.mark.parametrize("width", [1280, 480])
def test_report_page_in_headless_chromium(report_html, tmp_path, width):
    binary = _browser()
    if binary is None:
        pytest.skip("no Chromium found (install Debian's `chromium`; .ci/run does)")
    page = tmp_path / "page.html"
    text = report_html.read_text()
    assert "</body>" in text
    page.write_text(text.replace("</body>", CHECKS + "</body>"))
    res = _chromium(binary, tmp_path / "profile", f"--window-size={width},900",
                    "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    m = re.search(r'<pre id="lnlab-check">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the page's checks did not run: rc={res.returncode} {res.stderr[-2000:]}"
    got = json.loads(html.unescape(m.group(1)))

    assert got["images"] == 1 and got["broken"] == []
    assert got["all"] == ["toy.level", "toy.b_beats_a", "toy.never", "toy.missing", "toy.exact"]
    assert got["checks"] == ["toy.exact"]
    assert got["supported"] == ["toy.level", "toy.b_beats_a"]
    assert got["reset"] == got["all"] and got["shown_text"] == "5 of 5 shown"
    assert got["sorted_by_id"] == sorted(got["all"])
    assert got["scroll_width"] <= got["width"], "the page scrolls sideways"
    assert got["overflow"] == []
    assert got["lightbox"] == [True, True, False]
    assert got["toc"] and all(ok for _, ok in got["toc"]), got["toc"]

    shot = tmp_path / f"report-{width}.png"
    height = min(int(got["height"]), 16000)
    res = _chromium(binary, tmp_path / "profile", f"--window-size={width},{height}",
                    "--virtual-time-budget=5000", f"--screenshot={shot}", report_html.as_uri())
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", res.stderr[-2000:]
    if os.environ.get("LNLAB_SCREENSHOT_DIR"):
        dest = Path(os.environ["LNLAB_SCREENSHOT_DIR"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / shot.name)
        (dest / f"report-{width}.json").write_text(json.dumps(
            {"width": width, "page_height_px": got["height"]}) + "\n")
