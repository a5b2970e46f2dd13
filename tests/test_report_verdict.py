"""The verdict table: per case and dtype, the most accurate variant on the headline
(runs everywhere, no non-finite result, smallest worst max dULP), the cheapest among
equals, and the variants that fail there."""

from __future__ import annotations

import pandas as pd
from helpers import Spec, write_run

from rulelab.report.load import load_accuracy
from rulelab.report.verdict import verdict_table


def specs() -> list[Spec]:
    out = []
    for dtype in ("float32", "bfloat16"):
        out += [
            Spec("pick", "a", "value", dtype=dtype, ulp=3), Spec("pick", "a", "grad", "x", dtype=dtype, ulp=3),
            Spec("pick", "b", "value", dtype=dtype, ulp=0), Spec("pick", "b", "grad", "x", dtype=dtype, ulp=1, nan_from=6),
            Spec("pick", "c", "value", dtype=dtype, ulp=2), Spec("pick", "c", "grad", "x", dtype=dtype, ulp=2 if dtype == "float32" else 3),
            Spec("pick", "d", "value", dtype=dtype, ulp=0), Spec("pick", "d", "grad", "x", dtype=dtype, status="unsupported", message="no"),
            Spec("pick", "e", "value", dtype=dtype, ulp=0), Spec("pick", "e", "grad", "x", dtype=dtype, ulp=1, big_from=4),
        ]
    return out


def test_the_most_accurate_variant_that_runs_everywhere_is_chosen(tmp_path):
    acc = load_accuracy([write_run(tmp_path / "run", specs())])
    v = verdict_table(acc.summary).set_index(["case", "dtype"])
    f32 = v.loc[("pick", "float32")]
    assert f32["use"] == "c" and f32["max dULP"] == "2" and f32["non-finite"] == 0
    fails = f32["fail here"]
    assert "b (" in fails and "non-finite" in fails and "d (grad: unsupported)" in fails and "e (" in fails and "ULP" in fails
    assert "a (" not in fails and "c (" not in fails
    # in bfloat16 a and c tie at 3 ULP: the study timings pick the cheaper
    timings = pd.DataFrame({"case": ["pick"] * 2, "variant": ["a", "c"], "status": ["ok"] * 2, "ratio_to_naive": [0.5, 2.0]})
    v = verdict_table(acc.summary, timings).set_index(["case", "dtype"])
    assert v.loc[("pick", "bfloat16"), "use"] == "a" and v.loc[("pick", "bfloat16"), "time vs naive"] == "0.50x"
    assert v.loc[("pick", "float32"), "use"] == "c"


def test_a_case_where_every_variant_fails_says_so(tmp_path):
    acc = load_accuracy([write_run(tmp_path / "run", [Spec("bad", "x", "value", ulp=1, nan_from=3), Spec("bad", "y", "value", ulp=1, big_from=2)])])
    row = verdict_table(acc.summary).iloc[0]
    assert row["use"].endswith("(none passes)") and "x (" in row["fail here"] and "y (" in row["fail here"]
