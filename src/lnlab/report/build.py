"""Build the report of an output directory: ``claims.json``, ``report.md``, ``report.html``.

The report is computed from the store alone (never from in-memory state of a run), so
``lnlab report DIR`` can rebuild it at any time, e.g. after a sweep was resumed. For each
experiment the latest sweep decides which runs count; the experiment's ``analyze`` turns them
into per-seed measurements, its claims' rules into verdicts, its ``figures`` into PNGs. The
HTML (:mod:`lnlab.report.page`, Jinja2 templates) embeds the PNGs as base64 and inlines its
CSS and script, so it is one file that opens anywhere, offline.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lnlab.errors import LnlabError
from lnlab.errors import error_summary as one_line  # a failed step's error, capped
from lnlab.experiments.claims import CHECK_OUTCOMES, VERDICTS, ClaimResult, evaluate_all
from lnlab.experiments.framework import Experiment, Results
from lnlab.io import dir_lock
from lnlab.report.files import write_atomic
from lnlab.report.fmt import fmt_cell, fmt_num, sort_rows
from lnlab.report.page import render_html
from lnlab.report.replication import (
    Replication,
    collect_replication,
    replication_json,
    replication_markdown,
)
from lnlab.runner.store import Store, SweepRow

__all__ = ["ExperimentSection", "Report", "build_report", "collect"]

VERDICT_COLORS = {"supported": "#1b7f3b", "contradicted": "#b3261e", "inconclusive": "#8a6d00",
                  "pass": "#1b7f3b", "fail": "#b3261e"}
VERDICT_BG = {"supported": "#e6f4ea", "contradicted": "#fce8e6", "inconclusive": "#fef7e0",
              "pass": "#e6f4ea", "fail": "#fce8e6"}


@dataclass
class ExperimentSection:
    """Everything the report shows for one experiment."""

    name: str
    description: str
    sweep: SweepRow
    counts: dict[str, int]
    claims: list[ClaimResult] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    table: tuple[list[str], list[list[str]]] = field(default_factory=lambda: ([], []))
    problems: list[str] = field(default_factory=list)
    seeds_by_scale: dict[str, int] = field(default_factory=dict)

    def scale_note(self, c: ClaimResult) -> str:
        """Why an inconclusive claim could not be decided at this scale, and what can."""
        need = c.seeds_needed
        if need is None or c.measurement is None:
            return ""
        n, scale = c.measurement.n, self.sweep.scale
        other = [f"{k} scale runs {v}" for k, v in self.seeds_by_scale.items() if k != scale]
        where = ("full scale" if self.seeds_by_scale.get("full", 0) >= need
                 else f"--seeds {need}")
        return (f"cannot be decided at {scale} scale with {n} seeds: about {need} seeds "
                f"needed ({'; '.join(other) or 'no other scale'}); use {where}")


@dataclass
class Report:
    out_dir: Path
    created: str
    sections: list[ExperimentSection]
    replication: Replication | None = None  # verdicts on the second seed set, if run
    files_dir: Path | None = None  # where figures are written (paths are shown relative)

    @property
    def base(self) -> Path:
        return self.files_dir if self.files_dir is not None else self.out_dir

    @property
    def claims(self) -> list[ClaimResult]:
        """Empirical claims only (checks are reported apart: ``checks``)."""
        return [c for s in self.sections for c in s.claims if c.kind == "empirical"]

    @property
    def checks(self) -> list[ClaimResult]:
        return [c for s in self.sections for c in s.claims if c.kind == "check"]

    def verdict_counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.claims) for v in VERDICTS}

    def check_counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.checks) for v in CHECK_OUTCOMES}

    def headline(self) -> str:
        """One sentence with both kinds' counts (never added together)."""
        vc, cc = self.verdict_counts(), self.check_counts()
        return (f"{len(self.claims)} empirical claims: "
                + ", ".join(f"{n} {v}" for v, n in vc.items())
                + f". {len(self.checks)} checks: " + ", ".join(f"{n} {v}" for v, n in cc.items())
                + ".")


def collect(out_dir: str | Path,
            resolve: Callable[[str], Experiment] | None = None,
            files_dir: str | Path | None = None) -> Report:
    """Analyze every experiment in the store; figures go to ``files_dir/figures/<name>/``
    (``files_dir`` defaults to ``out_dir``).

    A failing ``analyze``/``figures`` is reported in its section (its claims become
    inconclusive) instead of aborting the whole report.
    """
    if resolve is None:
        from lnlab.experiments import get_experiment as resolve
    out = Path(out_dir)
    base = Path(files_dir) if files_dir is not None else out
    sections = []
    with Store.open(out) as store:
        sweeps = store.latest_sweeps()
        if not sweeps:
            raise LnlabError(f"no experiment results in {out}: run `lnlab run` first")
        for sw in sweeps:
            rows = store.runs(keys=sw.keys)
            counts = {s: sum(r.status == s for r in rows)
                      for s in ("finished", "diverged", "failed", "running", "pending")}
            try:
                exp = resolve(sw.experiment)
            except (LnlabError, ImportError, TypeError) as e:
                sections.append(ExperimentSection(sw.experiment, "", sw, counts,
                                                  problems=[f"cannot load: {one_line(e)}"]))
                continue
            results = Results.from_store(store, sw.keys, experiment=exp.name, scale=sw.scale,
                                         seeds=sw.seeds)
            sec = ExperimentSection(exp.name, exp.description, sw, counts,
                                    seeds_by_scale=dict(exp.seeds))
            if counts["pending"] or counts["running"]:
                sec.problems.append(f"{counts['pending'] + counts['running']} run(s) not done "
                                    "yet: re-run the same command to finish the sweep")
            measurements = {}
            analyzed = False
            try:
                measurements = exp.analyze(results)
                analyzed = True
            except Exception as e:
                sec.problems.append(f"analysis failed: {one_line(e)}")
            sec.claims = evaluate_all(exp.claims, measurements, exp.name, strict=False)
            if analyzed:
                sec.problems += [f"claim {c.id}: {c.metric!r} was not measured (analysis defect)"
                                 for c in exp.claims if c.metric not in measurements]
            sec.problems += edited_claims(exp, sw)
            try:
                sec.figures = exp.figures(results, base / "figures" / exp.name)
            except Exception as e:
                sec.problems.append(f"figures failed: {one_line(e)}")
            try:
                sec.table = exp.table(results)
            except Exception as e:
                sec.problems.append(f"results table failed: {one_line(e)}")
            sections.append(sec)
        replication = collect_replication(store, sweeps, [c for s in sections for c in s.claims],
                                          resolve)
    return Report(out, datetime.now(UTC).isoformat(timespec="seconds"), sections, replication,
                  files_dir=files_dir and Path(files_dir))


def edited_claims(exp: Experiment, sw: SweepRow) -> list[str]:
    """Claims whose definition differs from the one recorded when the sweep started.

    Rules must be fixed before the results exist; this makes any later edit visible.
    """
    if not sw.claims:
        return []
    then = {c.get("id"): c for c in sw.claims}
    out = []
    for c in exp.claims:
        old = then.get(c.id)
        if old is None:
            out.append(f"claim {c.id} was added after this sweep ran")
        elif old != json.loads(json.dumps(c.to_dict())):
            out.append(f"claim {c.id} was changed after this sweep ran "
                       "(its verdict uses the new definition)")
    return out


REPORT_FILES = ("claims.json", "report.md", "report.html", "figures")
BUILDS = ".report"  # every build in its own folder; "current" names the one shown


def build_report(out_dir: str | Path,
                 resolve: Callable[[str], Experiment] | None = None,
                 docs_dir: str | Path | None = None) -> dict[str, Path]:
    """Collect and write the report files as one set; returns their paths.

    Why a set: ``claims.json``, ``report.md``, ``report.html`` and ``figures/`` must come
    from the same build, even if the process is killed half-way. Each build is written
    into its own folder ``.report/<build>/``; then one atomic rename points the symlink
    ``.report/current`` at it. The files in ``out_dir`` are fixed symlinks through
    ``current``, so a reader sees the whole previous build or the whole new one, never a
    mix. Older builds are removed afterwards.

    ``docs_dir``: also write the results pages for ``docs/`` there (:mod:`lnlab.report.docs`),
    from the same analysis; their paths are returned under ``docs/<name>``.
    """
    out = Path(out_dir)
    with Store.open(out) as store:  # fail on a bad store before anything is written
        if not store.latest_sweeps():
            raise LnlabError(f"no experiment results in {out}: run `lnlab run` first")
    builds = out / BUILDS
    with dir_lock(builds, "building the report"):
        tmp = Path(tempfile.mkdtemp(prefix="build-", dir=builds))
        try:
            rep = collect(out, resolve, files_dir=tmp)
            (tmp / "figures").mkdir(exist_ok=True)
            write_atomic(tmp / "claims.json", render_json(rep))
            write_atomic(tmp / "report.md", render_markdown(rep))
            commit = code_version()
            write_atomic(tmp / "report.html", render_html(rep, commit))
            tmp.chmod(0o755)  # mkdtemp makes 0700; reports are meant to be shared
            _point(builds / "current", tmp.name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for name in REPORT_FILES:
            _link_into_build(out, name)
        for old in builds.iterdir():  # earlier builds, and any left by a killed process
            if old.is_dir() and not old.is_symlink() and old.name != tmp.name:
                shutil.rmtree(old, ignore_errors=True)
    paths = {name: out / name for name in REPORT_FILES[:3]}
    if docs_dir is not None:
        from lnlab.report.docs import write_docs

        for p in write_docs(rep, docs_dir, commit):
            paths[f"docs/{p.name}"] = p
    return paths


def code_version() -> str:
    """``commit <sha>`` of the lnlab checkout (with ``+ local changes`` if dirty), else
    ``lnlab <version>`` for an installed package."""
    import subprocess

    import lnlab

    src = Path(lnlab.__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(src), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return f"lnlab {lnlab.__version__}"
    return f"commit {sha.strip()}" + (" + local changes" if dirty.strip() else "")


def _point(link: Path, target: str) -> None:
    """Make symlink ``link`` point to ``target`` atomically (a new link renamed over it)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _link_into_build(out: Path, name: str) -> None:
    """``out/name`` -> ``.report/current/name``. A report of an older lnlab (plain files,
    a real ``figures/`` folder) is replaced by the link; its folder is moved away first."""
    path, target = out / name, f"{BUILDS}/current/{name}"
    if path.is_symlink() and os.readlink(path) == target:
        return
    if path.is_dir() and not path.is_symlink():
        path.rename(Path(tempfile.mkdtemp(prefix="old-", dir=out / BUILDS)) / name)
    _point(path, target)


# ---------------------------------------------------------------------------- helpers
def measured_text(c: ClaimResult) -> str:
    """Empirical: ``mean [lo, hi] unit`` (the rule's interval); check: the worst value."""
    m = c.measurement
    if m is None or m.n == 0:
        return "–"
    unit = f" {m.unit}" if m.unit else ""
    if c.kind == "check":
        target = getattr(c.claim.rule, "target", None)
        if target is None:
            op = getattr(c.claim.rule, "op", ">")
            worst = (min if op in (">", ">=") else max)(m.finite)
        else:
            worst = max(m.finite, key=lambda v: abs(v - target))
        return f"worst {_num(worst)}{unit}"
    s = c.stats
    if s is None or not (math.isfinite(s.low) and math.isfinite(s.high)):
        return f"{_num(m.mean)}{unit}"
    return f"{_num(s.estimate)} [{_num(s.low)}, {_num(s.high)}]{unit}"


def per_seed_text(c: ClaimResult) -> str:
    m = c.measurement
    if m is None or not m.values:
        return "–"
    return ", ".join(_num(float(v)) for _, v in sorted(m.values.items()))


def detectable_text(c: ClaimResult) -> str:
    s = c.stats
    return _num(s.detectable) if s is not None else "–"


def minimal_text(c: ClaimResult) -> str:
    d = c.claim.to_dict()
    if c.kind == "check":
        return f"tol {_num(float(d['tolerance']))}"
    return f"{d['direction']} {_num(float(d['null']))}, minimal {_num(float(d['minimal_effect']))}"


def _num(x: float) -> str:
    return fmt_num(x)


def _seeds_text(sw: SweepRow) -> str:
    if not sw.seeds:
        return "–"
    return f"{len(sw.seeds)} ({', '.join(map(str, sw.seeds))})"


def _versions_text(v: dict[str, str]) -> str:
    return ", ".join(f"{k} {val}" for k, val in v.items())


def render_json(rep: Report) -> str:
    doc: dict[str, Any] = {
        "created": rep.created,
        "verdicts": rep.verdict_counts(),
        "check_outcomes": rep.check_counts(),
        "headline": rep.headline(),
        "experiments": [
            {"name": s.name, "scale": s.sweep.scale, "seeds": s.sweep.seeds,
             "options": s.sweep.options, "versions": s.sweep.versions,
             "sweep_started": s.sweep.started, "sweep_finished": s.sweep.finished,
             "runs": s.counts, "problems": s.problems,
             "figures": [str(p.relative_to(rep.base)) if p.is_relative_to(rep.base)
                         else str(p) for p in s.figures]}
            for s in rep.sections
        ],
        "claims": [{**c.to_dict(), "scale_note": _section(rep, c).scale_note(c)}
                   for c in rep.claims],
        "checks": [c.to_dict() for c in rep.checks],
    }
    if rep.replication is not None:
        doc["replication"] = replication_json(rep.replication)
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _section(rep: Report, c: ClaimResult) -> ExperimentSection:
    return next(s for s in rep.sections if any(x is c for x in s.claims))


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(rep: Report) -> str:
    lines = [
        "# lnlab report", "",
        f"Generated {rep.created}. {rep.headline()}", "",
        "## Empirical claims", "",
        "Each verdict comes from a confidence interval over seeds, with the rule and the "
        "smallest effect that matters fixed before the run.", "",
        "| experiment | claim | source | effect | direction, minimal effect "
        "| mean [CI] | n | per seed | detectable | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in rep.claims:
        n = c.measurement.n if c.measurement else 0
        lines.append(f"| {_md(c.experiment)} | **{_md(c.claim.id)}**: {_md(c.claim.statement)} "
                     f"| {_md(c.claim.source)} | {_md(c.claim.metric)} | {_md(minimal_text(c))} "
                     f"| {_md(measured_text(c))} | {n} | {_md(per_seed_text(c))} "
                     f"| {detectable_text(c)} | **{c.verdict}** |")
    lines += ["", "## Checks", "",
              "Exact mathematics, identities and static properties: pass or fail within a "
              "tolerance, on every value.", "",
              "| experiment | check | expected | tolerance | measured | n | outcome |",
              "|---|---|---|---|---|---|---|"]
    for c in rep.checks:
        n = c.measurement.n if c.measurement else 0
        lines.append(f"| {_md(c.experiment)} | **{_md(c.claim.id)}**: {_md(c.claim.statement)} "
                     f"| {_md(c.claim.expected)} | {_md(minimal_text(c))} "
                     f"| {_md(measured_text(c))} | {n} | **{c.verdict}** |")
    lines.append("")
    if rep.replication is not None:
        lines += replication_markdown(rep.replication)
    for s in rep.sections:
        lines += [f"## {s.name}", "", s.description, "",
                  f"- scale: `{s.sweep.scale}`; seeds: {_seeds_text(s.sweep)}",
                  "- runs: " + ", ".join(f"{n} {k}" for k, n in s.counts.items() if n),
                  f"- sweep: {s.sweep.started} → {s.sweep.finished or 'not finished'}",
                  f"- versions: {_versions_text(s.sweep.versions)}", ""]
        if s.sweep.options:
            lines += [f"- options: {json.dumps(s.sweep.options)}", ""]
        for p in s.problems:
            lines += [f"> **note:** {p}", ""]
        if s.claims:
            lines += ["| claim | rule | verdict | why |", "|---|---|---|---|"]
            lines += [f"| {_md(c.claim.id)} | {_md(c.claim.rule.describe())} | {c.verdict} "
                      f"| {_md(c.reason)}{_md('; ' + s.scale_note(c) if s.scale_note(c) else '')} |"
                      for c in s.claims]
            lines.append("")
        header, rows = s.table
        if rows:
            lines += ["| " + " | ".join(map(_md, header)) + " |",
                      "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_md(fmt_cell(x)) for x in r) + " |"
                      for r in sort_rows(rows)]
            lines.append("")
        for p in s.figures:
            rel = p.relative_to(rep.base) if p.is_relative_to(rep.base) else p
            lines += [f"![{p.stem}]({rel.as_posix()})", ""]
    return "\n".join(lines)


def _badge(verdict: str) -> str:
    return (f'<span class="verdict" style="color:{VERDICT_COLORS[verdict]};'
            f'background:{VERDICT_BG[verdict]}">{verdict}</span>')
