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
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import test_runner_toy as toy
from lnlab.experiments.claims import Check, Claim, Effect, Equivalence, Measurement
from lnlab.experiments.framework import Experiment
from lnlab.report import build_report
from lnlab.runner import run_sweep
from lnlab.runner.config import expand_grid

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")

# ------------------------------------------------------------------ a page-shaped toy experiment
# Besides tests/test_runner_toy.py's toy, the page shows this one (importable by the runner's
# workers as ``test_report_browser``): claims in two regimes, a results table whose rows the
# experiment sorts as text (g16 before g2) with unrounded numbers, and a wide three-panel figure.
NAME = "pagetoy"
DESCRIPTION = "Group numbers g = 2, 4, 16 in two regimes: what the report page must lay out."
ARMS = ("g2", "g4", "g16")
CLAIMS = [
    Claim("pagetoy.scratch", "test fixture", "accuracy grows with g (from scratch)",
          "acc[g16]-acc[g2]", "> 0", Effect(">", 0.1, min_n=2)),
    Claim("pagetoy.ft", "test fixture", "accuracy stays flat after fine-tuning",
          "acc[g16]-acc[g2]", "≈ 0", Equivalence(0.01, min_n=2)),
    Claim("pagetoy.count", "test fixture", "every run reports one value", "ones", "1",
          Check(1.0, 0.0)),
]


def sweep(scale: str, seeds: list[int]) -> list[dict]:
    return expand_grid({}, {"arm": list(ARMS)}, seeds=seeds)


def run(config: dict, run_dir: Path) -> dict:
    g = int(config["arm"][1:])
    acc = 1 / 3 + math.log2(g) / 7 + config["seed"] / 97  # unrounded on purpose
    return {"summary": {"acc": acc, "flops": 9.379e9 * g, "ones": 1.0}, "epochs": []}


def analyze(results) -> dict[str, Measurement]:
    return {"acc[g16]-acc[g2]": results.paired("acc", {"arm": "g16"}, {"arm": "g2"}),
            "ones": results.per_seed("ones", arm="g2")}


def table(results) -> tuple[list[str], list[list[str]]]:
    rows = []
    for arm in sorted(ARMS):  # plain text order: g16, g2, g4
        acc = list(results.per_seed("acc", arm=arm).values.values())
        flops = list(results.per_seed("flops", arm=arm).values.values())
        rows.append([arm, f"{statistics.mean(acc)!r} ± {statistics.stdev(acc):.2g}",
                     f"{statistics.mean(flops):.4g}"])
    return ["arm", "acc", "flops"], rows


def figures(results, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(24, 4), dpi=100)  # 2400 px wide
    for ax, arm in zip(axes, ARMS, strict=True):
        ax.bar(["acc"], [statistics.mean(results.per_seed("acc", arm=arm).values.values())])
        ax.set_title(arm)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "groups_wide.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]



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
  pick("experiment", "toy"); out.toy = visible();
  pick("kind", "check"); out.toy_checks = visible();
  pick("experiment", ""); pick("kind", ""); pick("verdict", "supported");
  out.supported = visible();
  pick("verdict", ""); pick("regime", "fine-tuning"); out.fine_tuning = visible();
  pick("regime", ""); out.reset = visible();
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
  var table = document.getElementById("claims-table");
  var details = document.getElementById("claims-details");
  var reason = table.querySelector("tbody td:last-child .why");
  function shown(el) { return getComputedStyle(el).display !== "none"; }
  out.details = [details.checked, shown(reason), table.offsetHeight];
  details.click();  // "details" shows each claim's source, criterion, per-seed values, reason
  out.details.push(details.checked, shown(reason), table.offsetHeight);
  details.click();
  out.height = document.documentElement.scrollHeight;
  out.figures = imgs.map(function (i) {
    return {alt: i.alt, natural: i.naturalWidth,
            shown: Math.round(i.getBoundingClientRect().width)};
  });
  var wide = imgs.filter(function (i) { return i.naturalWidth >= 2000; })[0];
  var box = document.getElementById("lightbox"), big = box.querySelector("img");
  wide.click();  // a figure opens at full size in the lightbox, a click closes it
  out.lightbox = [box.open, big.src === wide.src,
                  Math.round(big.getBoundingClientRect().width) === wide.naturalWidth];
  box.click();
  out.lightbox.push(box.open);
  var results = document.querySelector("#exp-pagetoy table.sortable");
  out.pagetoy_table = Array.prototype.map.call(results.tBodies[0].rows, function (r) {
    return Array.prototype.map.call(r.cells, function (c) { return c.textContent; });
  });
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


def _resolve(name: str) -> Experiment:
    return Experiment.from_module({"toy": toy, NAME: sys.modules[__name__]}[name])


@pytest.fixture(scope="module")
def binary() -> str:
    found = _browser()
    if found is None:
        pytest.skip("no Chromium found (install Debian's `chromium`; .ci/run does)")
    return found


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    run_sweep(out, "toy", "test_runner_toy", toy.sweep("quick", [0, 1, 2]), scale="quick",
              seeds=[0, 1, 2], versions={"torch": "T"}, progress=False)
    run_sweep(out, NAME, __name__, sweep("quick", [0, 1]), scale="quick", seeds=[0, 1],
              versions={"torch": "T"}, progress=False)
    return build_report(out, resolve=_resolve)["report.html"]


@pytest.mark.parametrize("width", [1280, 500])  # headless Chromium's narrowest window
def test_report_page_in_headless_chromium(binary, report_html, tmp_path, width):
    page = tmp_path / "page.html"
    text = report_html.read_text()
    assert "</body>" in text
    page.write_text(text.replace("</body>", CHECKS + "</body>"))
    res = _chromium(binary, tmp_path / "profile", f"--window-size={width},900",
                    "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    m = re.search(r'<pre id="lnlab-check">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the page's checks did not run: rc={res.returncode} {res.stderr[-2000:]}"
    got = json.loads(html.unescape(m.group(1)))

    toy_ids = ["toy.level", "toy.b_beats_a", "toy.never", "toy.missing", "toy.exact"]
    assert got["images"] == 2 and got["broken"] == []
    assert got["all"] == [*toy_ids, "pagetoy.scratch", "pagetoy.ft", "pagetoy.count"]
    assert got["toy"] == toy_ids and got["toy_checks"] == ["toy.exact"]
    assert got["supported"] == ["toy.level", "toy.b_beats_a", "pagetoy.scratch"]
    assert got["fine_tuning"] == ["pagetoy.ft"]
    assert got["reset"] == got["all"] and got["shown_text"] == "8 of 8 shown"
    assert got["sorted_by_id"] == sorted(got["all"])
    wide = next(f for f in got["figures"] if f["natural"] == 2400)
    assert wide["alt"] == "Groups wide."  # no caption entry: the readable file name
    assert wide["shown"] <= got["width"]  # fitted to the page; the lightbox shows it whole
    assert got["lightbox"] == [True, True, True, False]
    assert [r[0] for r in got["pagetoy_table"]] == ["g2", "g4", "g16"]  # natural order
    for row in got["pagetoy_table"]:  # one formatter: at most 3 significant figures
        for num in re.findall(r"\d[\d.]*(?:e-?\d+)?", " ".join(row[1:])):
            assert len(num.split("e")[0].replace(".", "").lstrip("0")) <= 3, row
    assert got["width"] == width
    assert got["scroll_width"] <= got["width"], "the page scrolls sideways"
    assert got["overflow"] == []
    assert got["toc"] and all(ok for _, ok in got["toc"]), got["toc"]
    off, off_shown, compact, on, on_shown, detailed = got["details"]
    assert (off, off_shown, on, on_shown) == (False, False, True, True)
    assert compact < detailed, "the compact claims table is not shorter"

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
            {"width": got["width"], "page_height_px": got["height"]}) + "\n")
