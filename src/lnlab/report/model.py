"""What a report holds (sections, claims, counts) and the short texts every renderer shares.

Kept apart from :mod:`lnlab.report.build` so that the renderers (:mod:`~lnlab.report.page`,
:mod:`~lnlab.report.docs`) can use them without importing the builder that calls them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lnlab.experiments.claims import CHECK_OUTCOMES, VERDICTS, ClaimResult
from lnlab.report.fmt import fmt_num
from lnlab.report.replication import Replication
from lnlab.runner.store import SweepRow

__all__ = [
    "ExperimentSection",
    "Report",
    "detectable_text",
    "measured_text",
    "minimal_text",
    "per_seed_text",
    "seeds_text",
    "verdict_badge",
    "versions_text",
]

REGIME_ORDER = ("from scratch", "own pretraining", "real pretrained checkpoint")
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
    extra_tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    label: str = ""  # "memorization (paper)" when the store holds the experiment at two scales
    regime_note: str = ""

    @property
    def title(self) -> str:
        return self.label or self.name

    @property
    def slug(self) -> str:
        """A file and anchor name unique among the report's sections."""
        return f"{self.name}-{self.sweep.scale}" if self.label else self.name

    @property
    def shown(self) -> list[ClaimResult]:
        """The claims this sweep measured (the ones it did not run are listed apart)."""
        return [c for c in self.claims if not c.not_run]

    @property
    def not_run(self) -> list[ClaimResult]:
        return [c for c in self.claims if c.not_run]

    def not_run_text(self) -> str:
        """One line: the claims this sweep did not run, grouped by the reason (which scale)."""
        why: dict[str, list[str]] = {}
        for c in self.not_run:
            why.setdefault(c.measurement.not_run if c.measurement else "", []).append(c.claim.id)
        return "; ".join(f"{', '.join(ids)} ({w})" for w, ids in why.items())

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
        """Empirical claims only (checks are reported apart: ``checks``; claims whose setting
        this store's sweeps did not run are neither: ``not_run``)."""
        return [c for s in self.sections for c in s.shown if c.kind == "empirical"]

    @property
    def checks(self) -> list[ClaimResult]:
        return [c for s in self.sections for c in s.shown if c.kind == "check"]

    @property
    def not_run(self) -> list[ClaimResult]:
        """Claims no sweep here measured (another scale runs them), once per claim id."""
        ran = {(c.experiment, c.claim.id) for s in self.sections for c in s.shown}
        out: dict[tuple[str, str], ClaimResult] = {}
        for s in self.sections:
            for c in s.not_run:
                if (c.experiment, c.claim.id) not in ran:
                    out.setdefault((c.experiment, c.claim.id), c)
        return list(out.values())

    def regime_table_for(self, s: ExperimentSection) -> tuple[list[str], list[list[str]]]:
        """The regime table of ``s``'s experiment, shown once: in its first section only."""
        if next(x for x in self.sections if x.name == s.name) is not s:
            return [], []
        return self.regime_table(s.name)

    def regime_table(self, name: str) -> tuple[list[str], list[list[str]]]:
        """For an experiment whose claims name their regime: one row per claim (its id
        without the setting), one column per (regime, setting), the verdict in each cell
        ("not run" where no sweep here ran it, "–" where the claim is not tested there)."""
        results = [c for s in self.sections if s.name == name for c in s.claims
                   if c.claim.regime]
        cols: dict[tuple[str, str], None] = {}
        cells: dict[tuple[str, tuple[str, str]], str] = {}
        for c in results:
            stem, setting = c.claim.id.rsplit(".", 1)
            col = (c.claim.regime, setting)
            cols.setdefault(col)
            key = (stem, col)
            if not c.not_run or key not in cells:
                cells[key] = c.verdict
        order = {r: i for i, r in enumerate(REGIME_ORDER)}
        columns = sorted(cols, key=lambda rc: order.get(rc[0], len(order)))
        stems = list(dict.fromkeys(c.claim.id.rsplit(".", 1)[0] for c in results))
        header = ["claim", *(f"{r}: {s}" for r, s in columns)]
        rows = [[stem, *(cells.get((stem, col), "–") for col in columns)] for stem in stems]
        return header, rows

    def verdict_counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.claims) for v in VERDICTS}

    def check_counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.checks) for v in CHECK_OUTCOMES}

    def headline(self) -> str:
        """One sentence with both kinds' counts (never added together)."""
        vc, cc = self.verdict_counts(), self.check_counts()
        text = (f"{len(self.claims)} empirical claims: "
                + ", ".join(f"{n} {v}" for v, n in vc.items())
                + f". {len(self.checks)} checks: " + ", ".join(f"{n} {v}" for v, n in cc.items())
                + ".")
        if self.not_run:
            text += f" {len(self.not_run)} not run at the scales here."
        return text


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


def seeds_text(sw: SweepRow) -> str:
    if not sw.seeds:
        return "–"
    return f"{len(sw.seeds)} ({', '.join(map(str, sw.seeds))})"


def versions_text(v: dict[str, str]) -> str:
    return ", ".join(f"{k} {val}" for k, val in v.items())


def verdict_badge(verdict: str) -> str:
    return (f'<span class="verdict" style="color:{VERDICT_COLORS[verdict]};'
            f'background:{VERDICT_BG[verdict]}">{verdict}</span>')
