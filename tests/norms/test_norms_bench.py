"""``lnlab bench norms``: any feature size, the compiled rows, and its argument checks."""

from __future__ import annotations

import pytest

from lnlab.bench.norms import VARIANTS, _spec_for, run_bench


@pytest.mark.parametrize(("n", "groups"), [(100, 5), (256, 8), (97, 1), (6, 6), (12, 6)])
def test_groupln_takes_a_divisor_of_any_feature_size(n: int, groups: int) -> None:
    assert _spec_for("groupln:groups=8", n) == f"groupln:groups={groups}"
    assert _spec_for("adanorm", n) == "adanorm"


def test_odd_shape_and_compiled_rows() -> None:
    """100 features (not a multiple of 8) run every variant; --compile adds a compiled row
    beside each eager one (the eager backend here, to keep the test fast)."""
    variants = [v for v in VARIANTS if v[0] in ("groupln", "adanorm", "none")]
    rows = run_bench([(3, 100)], repeats=1, inner=1, variants=variants, clock="cpu",
                     compile=True, compile_backend="eager")
    got = {(r.variant, r.mode) for r in rows}
    for label in ("groupln", "adanorm", "groupln [compiled]", "adanorm [compiled]", "none"):
        assert {(label, "fwd"), (label, "fwd+bwd")} <= got
    assert ("none [compiled]", "fwd") not in got
    assert next(r.spec for r in rows if r.variant == "groupln") == "groupln:groups=5"
    assert all(r.median_ms > 0 and r.ratio_to_native > 0 for r in rows)


def test_bad_arguments_are_one_line_errors(capsys: pytest.CaptureFixture) -> None:
    from lnlab.cli import main

    for args, msg in ((["--shapes", "100000000x100000"], "needs about"),
                      (["--shapes", "4x"], "bad --shapes"), (["--clock", "sun"], "unknown --clock"),
                      (["--threads", "-1"], "--threads")):
        assert main(["bench", "norms", *args]) == 2, args
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, err
