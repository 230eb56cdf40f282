"""The one paired comparison the experiments share (framework.paired_values, difference)."""

import pytest

from lnlab.experiments.claims import Measurement
from lnlab.experiments.framework import Results, Run, difference, paired_values


def test_paired_values_pairs_by_seed_and_counts_the_unpaired():
    m = paired_values({0: 3.0, 1: 5.0, 2: 1.0}, {1: 4.0, 2: 2.0, 7: 9.0}, unit="points")
    assert dict(m.values) == {1: 1.0, 2: -1.0}
    assert m.excluded == 2 and m.unit == "points"  # seeds 0 and 7 have no partner
    ratio = paired_values({0: 6.0}, {0: 3.0}, lambda x, y: x / y, excluded=4)
    assert dict(ratio.values) == {0: 2.0} and ratio.excluded == 4


def test_results_paired_is_paired_values_over_finished_runs():
    def run(arm: str, seed: int, acc: float, status: str = "finished") -> Run:
        return Run(f"{arm}{seed}", {"arm": arm, "seed": seed}, status, {"acc": acc}, [])

    res = Results([run("a", 0, 0.9), run("a", 1, 0.8), run("a", 2, 0.7, "diverged"),
                   run("b", 0, 0.5), run("b", 1, 0.6), run("b", 2, 0.1)])
    m = res.paired("acc", {"arm": "a"}, {"arm": "b"})
    assert dict(m.values) == pytest.approx({0: 0.4, 1: 0.2})
    # a's diverged run is lost, and b's run at that seed has no partner
    assert m.excluded == 2
    assert res.by_seed("acc", arm="b") == {0: 0.5, 1: 0.6, 2: 0.1}


def test_difference_of_measurements_keeps_their_losses_and_blocks():
    a = Measurement({0: 2.0, 1: 3.0}, excluded=1, blocked="one diverged")
    b = Measurement({0: 1.0, 2: 5.0}, excluded=2)
    d = difference(a, b, unit="ratio", note="n")
    assert dict(d.values) == {0: 1.0}
    assert (d.excluded, d.blocked, d.unit, d.note) == (3, "one diverged", "ratio", "n")
