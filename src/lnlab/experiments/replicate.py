"""Replication: the same claims measured on a second, disjoint set of seeds.

A verdict is only worth citing if it does not depend on which seeds happened to be drawn.
``--replicate`` therefore runs every experiment's sweep a second time on the seeds
``REPLICATE_FIRST_SEED, REPLICATE_FIRST_SEED + 1, …`` (the primary sweep uses ``0, 1, …``;
with fewer than ``REPLICATE_FIRST_SEED`` seeds the two sets never overlap), evaluates the
same claims on it, and sets the two verdicts side by side. Everything else — data split,
recipe, scale, options — is the same, so a disagreement is seed noise the claim's rule did
not absorb. A flip between *supported* and *contradicted* is a defect of the claim's design.

``compare_verdicts`` works on any claim results that have ``verdict``, ``experiment`` and
``claim.id`` (the framework's ``ClaimResult``), so it does not depend on how rules decide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "REPLICATE_FIRST_SEED",
    "Agreement",
    "ClaimLike",
    "compare_verdicts",
    "summarize",
]

REPLICATE_FIRST_SEED = 1000
DECIDED = ("supported", "contradicted")


class _HasId(Protocol):
    id: str


class ClaimLike(Protocol):
    """What ``compare_verdicts`` reads from a claim result."""

    experiment: str
    claim: _HasId
    verdict: str


@dataclass(frozen=True)
class Agreement:
    """One claim's verdicts on the primary and the replication seed set."""

    experiment: str
    claim: str
    primary: str
    replicate: str
    kind: str = "empirical"  # "check" for exact identities (expected to agree trivially)

    @property
    def agree(self) -> bool:
        return self.primary == self.replicate

    @property
    def flipped(self) -> bool:
        """Supported on one seed set and contradicted on the other."""
        return self.primary != self.replicate and {self.primary, self.replicate} == set(DECIDED)

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "claim": self.claim, "kind": self.kind,
                "primary": self.primary, "replicate": self.replicate, "agree": self.agree,
                "flipped": self.flipped}


def kind_of(result: Any) -> str:
    """``check`` or ``empirical``: read from the result or its claim if they say, else
    ``empirical`` (the conservative reading: it counts in the agreement totals)."""
    for obj in (result, getattr(result, "claim", None)):
        kind = getattr(obj, "kind", None)
        if isinstance(kind, str) and kind:
            return "check" if kind == "check" else "empirical"
    return "empirical"


def compare_verdicts(primary: Iterable[ClaimLike],
                     replicate: Iterable[ClaimLike]) -> list[Agreement]:
    """Pair the results by (experiment, claim id), in the primary's order.

    A claim missing from the replication (its experiment was not replicated) is left out;
    a claim only in the replication has nothing to agree with and is left out too.
    """
    rep = {(r.experiment, r.claim.id): r for r in replicate}
    out = []
    for p in primary:
        r = rep.get((p.experiment, p.claim.id))
        if r is not None:
            out.append(Agreement(p.experiment, p.claim.id, str(p.verdict), str(r.verdict),
                                 kind_of(p)))
    return out


def summarize(agreements: Iterable[Agreement]) -> dict[str, int]:
    """Counts over the empirical claims: compared, agree, differ, flipped (and checks)."""
    rows = list(agreements)
    emp = [a for a in rows if a.kind == "empirical"]
    return {"claims": len(emp), "agree": sum(a.agree for a in emp),
            "differ": sum(not a.agree for a in emp), "flipped": sum(a.flipped for a in emp),
            "checks": len(rows) - len(emp),
            "checks_differ": sum(not a.agree for a in rows if a.kind != "empirical")}
