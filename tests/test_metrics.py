"""Buckets, dULP and fractional error on constructed cases whose answers follow from the math."""

import math

import numpy as np
import pytest

from rulelab.core import floats as F
from rulelab.scoring.metrics import (
    binned,
    bucket_counts,
    point_errors,
    summarize,
    worst,
)
from rulelab.store.vocabulary import Bucket, worst_bucket

BUCKETS = [b.column for b in Bucket]


def f32(*v):
    return np.array(v, dtype=np.float32)


def test_buckets_by_construction():
    ref = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, math.inf, math.nan, math.nan, math.inf, 2.0])
    one = np.float32(1.0)
    up = lambda k: np.array(one).view(np.uint32) + k  # noqa: E731
    comp = np.array([
        1.0,
        np.array(up(1), np.uint32).view(np.float32),
        np.array(up(3), np.uint32).view(np.float32),
        np.array(up(600), np.uint32).view(np.float32),
        np.array(up(5000), np.uint32).view(np.float32),
        math.nan,          # finite ref, NaN result
        3.0,               # inf ref, finite result
        math.nan,          # both undefined
        7.0,               # undefined ref, finite result
        math.inf,          # matching infinity: exact
        -math.inf,         # finite ref, inf result
    ], dtype=np.float32)
    e = point_errors(comp, ref, np.zeros_like(ref), "float32")
    names = [BUCKETS[b] for b in e.bucket]
    assert names == ["exact", "ulp_1", "ulp_2_4", "ulp_5_1024", "ulp_gt_1024", "wrong_nonfinite",
                     "unexpected_finite", "both_undefined", "unexpected_finite", "exact", "wrong_nonfinite"]
    assert list(e.dulp[:5]) == [0, 1, 3, 600, 5000]
    row = summarize(e)
    assert row["n_points"] == 11 and row["max_ulp"] == 5000 and row["wrong_nonfinite"] == 2
    assert row["unexpected_finite"] == 2 and row["both_undefined"] == 1 and row["exact"] == 2
    assert worst_bucket(row).column == "wrong_nonfinite"


def test_signed_zero_is_exact_and_wrong_sign_infinity_is_wrong():
    e = point_errors(f32(-0.0, -math.inf), np.array([0.0, math.inf]), np.zeros(2), "float32")
    assert [BUCKETS[b] for b in e.bucket] == ["exact", "wrong_nonfinite"]


def test_overflowing_reference_rounds_to_inf():
    """A finite reference above float16's range rounds to inf, so an inf result is exact
    and max-finite is an unexpected finite value."""
    e = point_errors(np.array([math.inf, 65504.0], np.float16), np.array([1e6, 1e6]), np.zeros(2), "float16")
    assert [BUCKETS[b] for b in e.bucket] == ["exact", "unexpected_finite"]


def test_fractional_error_against_unrounded_reference():
    # reference 1 + 0.3 ulp(float32): correctly rounded result 1.0 has error 0.3 ulp
    u = 2.0**-23
    e = point_errors(f32(1.0, 1.0 + u), np.array([1.0 + 0.25 * u, 1.0]), np.array([0.05 * u, 0.0]), "float32")
    assert e.frac[0] == pytest.approx(0.3, rel=1e-12)
    assert e.frac[1] == pytest.approx(1.0, rel=1e-12)
    assert e.dulp[0] == 0


def test_bfloat16_distance_counts_representable_values():
    vals = F.all_finite("bfloat16")
    pos = np.unique(vals.astype(np.float64))
    pos = pos[(pos >= 1.0) & (pos < 4.0)]  # 2 binades of 2^7 values each
    e = point_errors(np.array([4.0]).astype(vals.dtype), np.array([1.0]), np.zeros(1), "bfloat16")
    assert e.dulp[0] == len(pos) == 256


def test_binned_and_worst():
    x = np.array([0.5, 0.75, 1.5, -3.0, 0.0])
    ref = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    comp = np.array([1.0, np.nextafter(np.float32(1), np.float32(2)), math.nan, 1.0, 1.0], np.float32)
    e = point_errors(comp, ref, np.zeros(5), "float32")
    b = binned(x, e).set_index(["sign", "binade"])
    assert b.loc[(1, -1.0), "count"] == 2 and b.loc[(1, -1.0), "max_ulp"] == 1
    assert b.loc[(1, 0.0), "nonfinite"] == 1
    assert b.loc[(-1, 1.0), "count"] == 1
    assert b.loc[(1, -math.inf), "count"] == 1
    w = worst((x,), comp, ref, np.zeros(5), e, k=2)
    assert w["in0"].tolist()[0] == 1.5 and w["bucket"].tolist() == ["wrong_nonfinite", "ulp_1"]


def test_bucket_counts_of_a_histogram_follow_the_bucket_edges():
    # dULPs 0, 1, 1, 2, 4, 5, 1024, 1025 and 10^6 (the open last bin holds the last two)
    d = np.array([0, 1, 1, 2, 4, 5, 1024, 1025, 10**6])
    hist = np.bincount(np.minimum(d, 1025), minlength=1026)
    counts = bucket_counts(hist)
    assert counts.tolist() == [1, 2, 2, 2, 2, 0, 0, 0, 0]
    assert np.bincount(Bucket.of_ulp(d), minlength=len(Bucket)).tolist() == counts.tolist()
    assert [Bucket.of_ulp(v) for v in (0, 1, 4, 5, 1024, 1025)] == [
        Bucket.EXACT, Bucket.ULP_1, Bucket.ULP_2_4, Bucket.ULP_5_1024, Bucket.ULP_5_1024, Bucket.ULP_GT_1024]
    with pytest.raises(ValueError, match="1026 bins"):
        bucket_counts(hist[:-1])
