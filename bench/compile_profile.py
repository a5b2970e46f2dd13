"""Where a sweep's compile time goes: each job of a case (variant x transform x argument)
traced, lowered and compiled alone, in one dtype, as the sweep's program builds it.

    python bench/compile_profile.py                       # every case, float32
    python bench/compile_profile.py --cases kepler ode_decay --dtype bfloat16

Prints one row per job (trace, lower and compile seconds, jaxpr equations) and the sum
per case and per transform. A sweep compiles each case x dtype as one program holding
every job (``evaluate.fused``), so its compile seconds are close to, not equal to, the
sum printed here. No persistent compilation cache is used. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def profile(case_names: list[str] | None, dtype: str, size: int) -> "pd.DataFrame":  # noqa: F821 - pandas imported inside
    import jax
    import pandas as pd

    from rulelab.core.floats import fmt
    from rulelab.jaxrun.evaluate import is_unsupported, vectorised
    from rulelab.model.case import TRANSFORMS, cases

    jax.config.update("jax_enable_compilation_cache", False)
    rows = []
    for case in cases():
        if case_names and case.name not in case_names:
            continue
        xs = tuple(np.ones(size, dtype=fmt(dtype).dtype) for _ in case.args)
        for vname, variant in case.variants.items():
            for transform in TRANSFORMS:
                for arg in (case.args[:1] if transform == "value" else case.args):
                    program = vectorised(variant.fn, transform, case.args.index(arg), len(case.args))
                    row = {"case": case.name, "variant": vname, "transform": transform, "arg": "" if transform == "value" else arg}
                    try:
                        t0 = time.perf_counter()
                        traced = program.trace(*xs)
                        t1 = time.perf_counter()
                        lowered = traced.lower()
                        t2 = time.perf_counter()
                        lowered.compile()
                        t3 = time.perf_counter()
                    except Exception as exc:  # noqa: BLE001 - a refused transform is listed, not timed
                        rows.append({**row, "status": "unsupported" if is_unsupported(exc) else "error"})
                        continue
                    rows.append({**row, "status": "ok", "trace_s": t1 - t0, "lower_s": t2 - t1, "compile_s": t3 - t2,
                                 "eqns": len(traced.jaxpr.jaxpr.eqns)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", help="only these cases (default: every case of the catalog)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--size", type=int, default=64, help="points per argument (default 64; compile time barely depends on it)")
    args = ap.parse_args(argv)
    df = profile(args.cases, args.dtype, args.size)
    ok = df[df["status"] == "ok"].copy()
    ok["total_s"] = ok["trace_s"] + ok["lower_s"] + ok["compile_s"]
    print(ok.round(3).to_string(index=False))
    print("\nper case (s):")
    print(ok.groupby("case")[["trace_s", "lower_s", "compile_s", "total_s"]].sum().sort_values("total_s", ascending=False).round(2).to_string())
    print("\nper transform (s):")
    print(ok.groupby("transform")[["trace_s", "lower_s", "compile_s", "total_s"]].sum().sort_values("total_s", ascending=False).round(2).to_string())


if __name__ == "__main__":
    main()
