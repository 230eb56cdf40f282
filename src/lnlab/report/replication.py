"""The report's replication section: each claim's verdict on two disjoint seed sets.

``lnlab run … --replicate`` stores a second sweep per experiment on the seeds
``REPLICATE_FIRST_SEED, …``. Here that sweep is analyzed with the same experiment code and
claims as the primary one, and the two verdicts are set side by side (an agreement table in
``report.md``/``report.html``, a ``replication`` object in ``claims.json``). A replication
sweep is compared only with a primary sweep of the same scale, options and seed count;
otherwise the section says why it was left out.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lnlab.errors import error_summary as one_line  # a failed step's error, capped
from lnlab.experiments.claims import ClaimResult, evaluate
from lnlab.experiments.framework import Experiment, Results
from lnlab.experiments.replicate import (
    REPLICATE_FIRST_SEED,
    Agreement,
    compare_verdicts,
    summarize,
)
from lnlab.runner.store import Store, SweepRow

__all__ = ["Replication", "collect_replication", "replication_html", "replication_json",
           "replication_markdown"]


@dataclass
class Replication:
    """The replication sweeps of an output directory, their claims and the agreement."""

    pairs: dict[str, tuple[SweepRow, SweepRow]]  # experiment → (primary, replication)
    claims: list[ClaimResult] = field(default_factory=list)  # verdicts on the second set
    agreements: list[Agreement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return summarize(self.agreements)


def _mismatch(primary: SweepRow, rep: SweepRow) -> str | None:
    if rep.id < primary.id:
        return "it ran before the latest primary sweep"
    if rep.scale != primary.scale:
        return f"scale {rep.scale} vs {primary.scale}"
    if rep.options != primary.options:
        return "its options differ"
    if len(rep.seeds) != len(primary.seeds):
        return f"{len(rep.seeds)} seeds vs {len(primary.seeds)}"
    if set(rep.seeds) & set(primary.seeds):
        return "its seeds overlap the primary's"
    return None


def evaluate_sweep(exp: Experiment, store: Store, sw: SweepRow,
                   problems: list[str]) -> list[ClaimResult]:
    """The experiment's claims evaluated on one sweep's runs (analysis errors → problems)."""
    results = Results.from_store(store, sw.keys, experiment=exp.name, scale=sw.scale,
                                 seeds=sw.seeds)
    measurements = {}
    try:
        measurements = exp.analyze(results)
    except Exception as e:  # reported in the section, like the primary analysis
        problems.append(f"{exp.name}: replication analysis failed: {one_line(e)}")
    return [evaluate(c, measurements, exp.name) for c in exp.claims]


def collect_replication(store: Store, primary: Sequence[SweepRow],
                        primary_claims: Sequence[ClaimResult],
                        resolve: Callable[[str], Experiment]) -> Replication | None:
    """Evaluate each experiment's latest replication sweep; None when there is none."""
    reps = {(s.experiment, s.scale): s for s in store.latest_sweeps(replicate=True)}
    if not reps:
        return None
    by_name = {(s.experiment, s.scale): s for s in primary}
    out = Replication(pairs={})
    for (name, scale), rep in reps.items():
        prim = by_name.get((name, scale))
        why = "no primary sweep" if prim is None else _mismatch(prim, rep)
        if why or prim is None:
            out.problems.append(f"{name}: replication sweep left out ({why})")
            continue
        done = store.statuses(rep.keys)
        pending = sum(done.get(k) in ("pending", "running") for k in rep.keys)
        if pending:
            out.problems.append(f"{name}: {pending} replication run(s) not done yet")
        try:
            exp = resolve(name)
        except Exception as e:  # the primary section reports the same failure
            out.problems.append(f"{name}: cannot load: {one_line(e)}")
            continue
        out.pairs[name] = (prim, rep)
        out.claims += evaluate_sweep(exp, store, rep, out.problems)
    out.agreements = compare_verdicts(
        [c for c in primary_claims if c.experiment in out.pairs], out.claims)
    return out


def _seed_range(seeds: Sequence[int]) -> str:
    if not seeds:
        return "–"
    s = sorted(seeds)
    if s == list(range(s[0], s[-1] + 1)) and len(s) > 1:
        return f"{s[0]}–{s[-1]}"
    return ", ".join(map(str, s))


def _headline(rep: Replication) -> str:
    s = rep.summary()
    text = (f"{s['claims']} empirical claims on two disjoint seed sets: {s['agree']} agree, "
            f"{s['differ']} differ, of which {s['flipped']} flipped between supported and "
            f"contradicted")
    if s["checks"]:
        text += f"; {s['checks']} checks, {s['checks_differ']} differ"
    return text + "."


def replication_json(rep: Replication) -> dict[str, Any]:
    """The ``replication`` object of ``claims.json``."""
    by_id = {(c.experiment, c.claim.id): c for c in rep.claims}
    return {
        "first_seed": REPLICATE_FIRST_SEED,
        "summary": rep.summary(),
        "experiments": [{"name": n, "scale": p.scale, "seeds": p.seeds,
                         "replicate_seeds": r.seeds, "replicate_started": r.started,
                         "replicate_finished": r.finished}
                        for n, (p, r) in rep.pairs.items()],
        "problems": rep.problems,
        "claims": [{**a.to_dict(),
                    "replicate_result": by_id[(a.experiment, a.claim)].to_dict()}
                   for a in rep.agreements],
    }


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def replication_markdown(rep: Replication) -> list[str]:
    """The agreement table of ``report.md``."""
    lines = ["## Replication", "", _headline(rep), "",
             "Seed sets: " + "; ".join(f"{n}: {_seed_range(p.seeds)} and "
                                       f"{_seed_range(r.seeds)}"
                                       for n, (p, r) in rep.pairs.items()) + ".", ""]
    lines += [f"> **note:** {_md(p)}" for p in rep.problems]
    if rep.problems:
        lines.append("")
    lines += ["| experiment | claim | kind | first seed set | second seed set | agree |",
              "|---|---|---|---|---|---|"]
    for a in rep.agreements:
        mark = "yes" if a.agree else ("**no — flipped**" if a.flipped else "no")
        lines.append(f"| {_md(a.experiment)} | {_md(a.claim)} | {a.kind} | {a.primary} "
                     f"| {a.replicate} | {mark} |")
    lines.append("")
    return lines


def replication_html(rep: Replication, badge: Callable[[str], str]) -> list[str]:
    """The agreement table of ``report.html``; ``badge`` renders a verdict."""
    e = html.escape
    parts = ["<h2 id='replication'>Replication</h2>", f"<p>{e(_headline(rep))}</p>",
             "<p class='meta'>seed sets: " + "; ".join(
                 f"{e(n)}: {e(_seed_range(p.seeds))} and {e(_seed_range(r.seeds))}"
                 for n, (p, r) in rep.pairs.items()) + "</p>"]
    parts += [f"<p class='note'>{e(p)}</p>" for p in rep.problems]
    parts.append("<table><tr><th>experiment</th><th>claim</th><th>kind</th>"
                 "<th>first seed set</th><th>second seed set</th><th>agree</th></tr>")
    for a in rep.agreements:
        mark = "yes" if a.agree else ("<b>no — flipped</b>" if a.flipped else "no")
        parts.append(f"<tr><td>{e(a.experiment)}</td><td>{e(a.claim)}</td><td>{a.kind}</td>"
                     f"<td>{badge(a.primary)}</td><td>{badge(a.replicate)}</td>"
                     f"<td>{mark}</td></tr>")
    parts.append("</table>")
    return parts
