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
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lnlab.errors import LnlabError
from lnlab.errors import error_summary as one_line  # a failed step's error, capped
from lnlab.experiments.claims import ClaimResult, evaluate_all
from lnlab.experiments.framework import Experiment, Results
from lnlab.io import dir_lock
from lnlab.report.docs import extra_table_lines, not_run_lines, regime_lines
from lnlab.report.files import write_atomic
from lnlab.report.fmt import fmt_cell, sort_rows
from lnlab.report.model import (
    ExperimentSection,
    Report,
    detectable_text,
    measured_text,
    minimal_text,
    per_seed_text,
    seeds_text,
    versions_text,
)
from lnlab.report.page import render_html
from lnlab.report.replication import (
    Replication,
    collect_replication,
    replication_json,
    replication_markdown,
)
from lnlab.runner.store import Store, SweepRow

__all__ = ["ExperimentSection", "Report", "build_report", "collect"]



def collect(out_dir: str | Path,
            resolve: Callable[[str], Experiment] | None = None,
            files_dir: str | Path | None = None,
            others: Sequence[str | Path] = ()) -> Report:
    """Analyze every experiment in the store; figures go to ``files_dir/figures/<name>/``
    (``files_dir`` defaults to ``out_dir``). ``others``: more output directories whose
    sweeps join the report (e.g. a quick reproduction and a ``--scale paper`` run kept
    apart); each (experiment, scale) may come from one directory only.

    A failing ``analyze``/``figures`` is reported in its section (its claims become
    inconclusive) instead of aborting the whole report.
    """
    if resolve is None:
        from lnlab.experiments import get_experiment as resolve
    dirs = [Path(out_dir), *(Path(d) for d in others)]
    base = Path(files_dir) if files_dir is not None else dirs[0]
    sections: list[ExperimentSection] = []
    replications: list[Replication] = []
    with contextlib.ExitStack() as stack:
        stores = [stack.enter_context(Store.open(d)) for d in dirs]
        found = [(st, d, sw) for st, d in zip(stores, dirs, strict=True)
                 for sw in st.latest_sweeps()]
        if not found:
            raise LnlabError(f"no experiment results in {', '.join(map(str, dirs))}: run "
                             "`lnlab run` first")
        where: dict[tuple[str, str], Path] = {}
        for _, d, sw in found:
            if (sw.experiment, sw.scale) in where:
                raise LnlabError(f"{where[sw.experiment, sw.scale]} and {d} both hold a "
                                 f"{sw.scale} sweep of {sw.experiment}: combine directories "
                                 "with different experiments or scales")
            where[sw.experiment, sw.scale] = d
        names = [sw.experiment for _, _, sw in found]
        several = {n for n in names if names.count(n) > 1}
        for store in stores:
            mine = [sw for st, _, sw in found if st is store]
            secs = [_collect_section(store, sw, resolve, base,
                                     f"{sw.experiment} ({sw.scale})"
                                     if sw.experiment in several else "") for sw in mine]
            sections += secs
            rep = collect_replication(
                store, mine, [c for s in secs for c in s.claims if not c.not_run], resolve)
            if rep is not None:
                replications.append(rep)
    replication = None
    for r in replications:  # one per directory that has a replication sweep
        if replication is None:
            replication = r
        else:
            replication.pairs.update(r.pairs)
            replication.claims += r.claims
            replication.agreements += r.agreements
            replication.problems += r.problems
    return Report(dirs[0], datetime.now(UTC).isoformat(timespec="seconds"), sections,
                  replication, files_dir=files_dir and Path(files_dir))


def _collect_section(store: Store, sw: SweepRow, resolve: Callable[[str], Experiment],
                     base: Path, label: str) -> ExperimentSection:
    """One sweep's section: its claims evaluated on its runs, its figures and tables."""
    rows = store.runs(keys=sw.keys)
    counts = {s: sum(r.status == s for r in rows)
              for s in ("finished", "diverged", "failed", "running", "pending")}
    try:
        exp = resolve(sw.experiment)
    except (LnlabError, ImportError, TypeError) as e:
        return ExperimentSection(sw.experiment, "", sw, counts, label=label,
                                 problems=[f"cannot load: {one_line(e)}"])
    results = Results.from_store(store, sw.keys, experiment=exp.name, scale=sw.scale,
                                 seeds=sw.seeds)
    sec = ExperimentSection(exp.name, exp.description, sw, counts,
                            seeds_by_scale=dict(exp.seeds), label=label,
                            regime_note=exp.regime_note)
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
        sec.figures = exp.figures(results, base / "figures" / sec.slug)
    except Exception as e:
        sec.problems.append(f"figures failed: {one_line(e)}")
    try:
        sec.table = exp.table(results)
        sec.extra_tables = exp.extra_tables(results)
    except Exception as e:
        sec.problems.append(f"results table failed: {one_line(e)}")
    return sec


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
                 docs_dir: str | Path | None = None,
                 others: Sequence[str | Path] = ()) -> dict[str, Path]:
    """Collect and write the report files as one set; returns their paths.

    Why a set: ``claims.json``, ``report.md``, ``report.html`` and ``figures/`` must come
    from the same build, even if the process is killed half-way. Each build is written
    into its own folder ``.report/<build>/``; then one atomic rename points the symlink
    ``.report/current`` at it. The files in ``out_dir`` are fixed symlinks through
    ``current``, so a reader sees the whole previous build or the whole new one, never a
    mix. Older builds are removed afterwards.

    ``docs_dir``: also write the results pages for ``docs/`` there (:mod:`lnlab.report.docs`),
    from the same analysis; their paths are returned under ``docs/<name>``. ``others``: more
    output directories combined into this report (read only; see :func:`collect`).
    """
    out = Path(out_dir)
    for d in (out, *map(Path, others)):
        with Store.open(d) as store:  # fail on a bad store before anything is written
            if not store.latest_sweeps():
                raise LnlabError(f"no experiment results in {d}: run `lnlab run` first")
    builds = out / BUILDS
    with dir_lock(builds, "building the report"):
        tmp = Path(tempfile.mkdtemp(prefix="build-", dir=builds))
        try:
            rep = collect(out, resolve, files_dir=tmp, others=others)
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


def render_json(rep: Report) -> str:
    doc: dict[str, Any] = {
        "created": rep.created,
        "verdicts": rep.verdict_counts(),
        "check_outcomes": rep.check_counts(),
        "headline": rep.headline(),
        "experiments": [
            {"name": s.name, "title": s.title, "scale": s.sweep.scale, "seeds": s.sweep.seeds,
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
        "not_run": [c.to_dict() for c in rep.not_run],
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
        lines += [f"## {s.title}", "", s.description, "",
                  f"- scale: `{s.sweep.scale}`; seeds: {seeds_text(s.sweep)}",
                  "- runs: " + ", ".join(f"{n} {k}" for k, n in s.counts.items() if n),
                  f"- sweep: {s.sweep.started} → {s.sweep.finished or 'not finished'}",
                  f"- versions: {versions_text(s.sweep.versions)}", ""]
        if s.sweep.options:
            lines += [f"- options: {json.dumps(s.sweep.options)}", ""]
        for p in s.problems:
            lines += [f"> **note:** {p}", ""]
        lines += regime_lines(rep, s) + not_run_lines(s)
        if s.shown:
            lines += ["| claim | rule | verdict | why |", "|---|---|---|---|"]
            lines += [f"| {_md(c.claim.id)} | {_md(c.claim.rule.describe())} | {c.verdict} "
                      f"| {_md(c.reason)}{_md('; ' + s.scale_note(c) if s.scale_note(c) else '')} |"
                      for c in s.shown]
            lines.append("")
        header, rows = s.table
        if rows:
            lines += ["| " + " | ".join(map(_md, header)) + " |",
                      "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_md(fmt_cell(x)) for x in r) + " |"
                      for r in sort_rows(rows)]
            lines.append("")
        lines += extra_table_lines(s)
        for p in s.figures:
            rel = p.relative_to(rep.base) if p.is_relative_to(rep.base) else p
            lines += [f"![{p.stem}]({rel.as_posix()})", ""]
    return "\n".join(lines)
