"""``report.html``: the report as one self-contained web page, rendered with Jinja2.

The templates (``templates/report.html.j2`` with its inline CSS and vanilla JS) are package
data. The page works offline: styles and script are inline, figures are base64 PNGs, nothing
is fetched. It opens with a contents list and a per-experiment summary, then one claims table
for both kinds (filterable by experiment, kind, verdict and regime; sortable), the replication
table, and a section per experiment with its claims, results table and captioned figures
(click to open full size).
"""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from typing import TYPE_CHECKING, Any

import jinja2

from lnlab.experiments.claims import CHECK_OUTCOMES, VERDICTS, ClaimResult
from lnlab.report.captions import caption, regime_of
from lnlab.report.fmt import fmt_cell, natural_key, sort_rows

if TYPE_CHECKING:
    from lnlab.report.model import ExperimentSection, Report

__all__ = ["anchor", "claim_row", "render_html"]


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("lnlab.report", "templates"),
                              autoescape=jinja2.select_autoescape(["html", "j2"]),
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def anchor(prefix: str, name: str) -> str:
    """An HTML id from a name: unsafe characters become ``-``."""
    return f"{prefix}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-')}"


def _numeric(text: str) -> bool:
    head = str(text).split(" ± ")[0].split(",")[0].split("/")[0].split(" [")[0].strip()
    head = head.removesuffix("%")
    try:
        float(head)
    except ValueError:
        return str(text).strip() == "–"
    return True


def claim_row(c: ClaimResult, s: ExperimentSection) -> dict[str, Any]:
    """Everything one claim shows, as plain strings (the page and the docs pages share it)."""
    from lnlab.report.model import measured_text, minimal_text, per_seed_text

    note = s.scale_note(c)
    m = c.measurement
    est = (c.stats.estimate if c.stats is not None else (m.mean if m and m.n else None))
    return {
        "id": c.claim.id,
        # one experiment at two scales shows a claim twice: its anchor then names the section
        "anchor": anchor("claim", (f"{s.slug}." if s.label else "") + c.claim.id),
        "experiment": s.title, "exp_anchor": anchor("exp", s.slug),
        "figures": anchor("exp", s.slug) + "-figures" if s.figures else "",
        "kind": c.kind, "scale": s.sweep.scale, "regime": regime_of(c),
        "statement": c.claim.statement, "source": c.claim.source, "metric": c.claim.metric,
        "criterion": minimal_text(c), "rule": c.claim.rule.describe(),
        "measured": measured_text(c), "n": m.n if m else 0,
        "sort_value": "" if est is None else repr(float(est)),
        "per_seed": per_seed_text(c) if m and m.values else "",
        "verdict": c.verdict, "why": fmt_cell(c.reason) + (f"; {note}" if note else ""),
    }


def _section(s: ExperimentSection, rep: Report) -> dict[str, Any]:
    from lnlab.report.model import seeds_text as _seeds_text
    from lnlab.report.model import versions_text as _versions_text

    header, rows = s.table
    figures = []
    for i, p in enumerate(s.figures):
        fig: dict[str, Any] = {"anchor": anchor("fig", f"{s.slug}-{p.stem}-{i}"),
                               "caption": caption(p), "path": str(p), "data": "", "error": ""}
        try:
            fig["data"] = base64.b64encode(p.read_bytes()).decode()
        except OSError as err:
            fig["error"] = str(err)
        figures.append(fig)
    return {
        "name": s.title, "anchor": anchor("exp", s.slug), "description": s.description,
        "scale": s.sweep.scale, "seeds": _seeds_text(s.sweep), "n_seeds": len(s.sweep.seeds),
        "runs": ", ".join(f"{n} {k}" for k, n in s.counts.items() if n),
        "started": s.sweep.started, "finished": s.sweep.finished or "not finished",
        "versions": _versions_text(s.sweep.versions),
        "options": json.dumps(s.sweep.options) if s.sweep.options else "",
        "problems": s.problems,
        "claims": [claim_row(c, s) for c in s.shown],
        "not_run": s.not_run_text(),
        "regimes": _regimes(s, rep),
        "verdicts": {v: sum(c.kind == "empirical" and c.verdict == v for c in s.shown)
                     for v in VERDICTS},
        "outcomes": {v: sum(c.kind == "check" and c.verdict == v for c in s.shown)
                     for v in CHECK_OUTCOMES},
        "extra_tables": [{"title": t, "header": list(h),
                          "rows": [[{"text": fmt_cell(x), "num": _numeric(x)} for x in r]
                                   for r in rows]} for t, h, rows in s.extra_tables],
        "table_header": list(header),
        "table_rows": [[{"text": fmt_cell(x), "num": _numeric(x)} for x in r]
                       for r in sort_rows(rows)],
        "figures": figures,
    }


def _regimes(s: ExperimentSection, rep: Report) -> dict[str, Any]:
    """The regime × claim table, shown once per experiment (in its first section)."""
    header, rows = rep.regime_table_for(s)
    if not rows:
        return {}
    return {"header": header, "rows": rows, "note": s.regime_note}


def render_html(rep: Report, commit: str = "") -> str:
    """The page for ``rep`` (``commit``: the code version to show, if known)."""
    from lnlab.report.model import verdict_badge as _badge
    from lnlab.report.replication import replication_html

    sections = [_section(s, rep) for s in rep.sections]
    rows = [r for s in sections for r in s["claims"]]

    def options(key: str) -> list[str]:
        return sorted({r[key] for r in rows}, key=natural_key)

    filters = [("experiment", "experiment", [s["name"] for s in sections]),
               ("kind", "kind", options("kind")),
               ("verdict", "verdict", [v for v in (*VERDICTS, *CHECK_OUTCOMES)
                                       if any(r["verdict"] == v for r in rows)]),
               ("regime", "regime", options("regime"))]
    totals = {"verdicts": rep.verdict_counts(), "outcomes": rep.check_counts()}
    replication = ("\n".join(replication_html(rep.replication, _badge))
                   if rep.replication is not None else "")
    return _env().get_template("report.html.j2").render(
        created=rep.created, commit=commit, headline=rep.headline(), sections=sections,
        rows=rows, filters=filters, verdicts=list(VERDICTS), outcomes=list(CHECK_OUTCOMES),
        totals=totals, replication=replication)
