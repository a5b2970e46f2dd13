"""The results store: unique runs, atomic files, parts and their assembly, schema."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest

from rulelab import store


def part_tables(case: str, n: int) -> dict:
    keys = {"case": [case] * n, "variant": ["v"] * n, "transform": ["value"] * n, "arg": [""] * n, "dtype": ["float32"] * n, "backend": ["cpu"] * n}
    return {
        "summary": {**{k: v[:1] for k, v in keys.items()}, "status": ["ok"], "message": [""], "n_points": [n], "max_ulp": [1.0], "exact": [n - 1]},
        "binned": {**{c: np.zeros(n, t) for c, (t, _) in store.TABLES["binned"].items() if t in ("int64", "float64")},
                   **keys, "binade_of": ["x"] * n, "sign": np.ones(n, np.int64), "binade": np.arange(n, dtype=float), "count": np.ones(n, np.int64)},
        "binned2": {},
        "worst": {},
        "samples": {**keys, "in0": np.arange(n, dtype=float), "in1": np.full(n, np.nan), "in2": np.full(n, np.nan),
                    "computed": np.zeros(n), "ref_hi": np.zeros(n), "dulp": np.zeros(n)},
    }  # fmt: skip


def test_run_ids_are_unique_when_created_together(tmp_path):
    made: list = []
    threads = [threading.Thread(target=lambda: made.append(store.new_run(tmp_path))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.name for p in made}) == 16
    assert all((p / "parts").is_dir() for p in made)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "x.json"
    store.write_json(path, {"a": np.int64(3)})
    store.write_json(path, {"a": 4})
    assert path.read_text().strip().endswith("}")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_parts_assemble_in_task_order_with_documented_columns(tmp_path):
    run = store.new_run(tmp_path)
    keys = [("b", "v", "value", "", "float32"), ("a", "v", "value", "", "float32")]
    # written in the other order: the tables follow ``keys``, not completion order
    store.write_part(run, keys[1], part_tables("a", 3), {"wall_s": 0.1})
    store.write_part(run, keys[0], part_tables("b", 2), {"wall_s": 0.2})
    tables = store.assemble(run, keys)
    summary = pd.read_parquet(run / "summary.parquet")
    assert list(summary["case"]) == ["b", "a"]
    assert list(summary.columns[: len(store.SUMMARY)]) == list(store.SUMMARY)
    assert summary["n_points"].dtype == "Int64" and summary["ulp_1"].isna().all()
    binned = pd.read_parquet(run / "binned.parquet")
    assert list(binned["case"]) == ["b", "b", "a", "a", "a"]
    worst = pd.read_parquet(run / "worst.parquet")
    assert worst.empty and list(worst.columns) == list(store.WORST)
    pd.testing.assert_frame_equal(tables["samples"], pd.read_parquet(run / "samples.parquet"))


def test_missing_or_corrupt_parts_are_not_finished(tmp_path):
    run = store.new_run(tmp_path)
    good, bad = ("a", "v", "value", "", "float32"), ("a", "v", "grad", "x", "float32")
    store.write_part(run, good, part_tables("a", 1), {})
    (run / "parts" / store.part_name(bad)).write_bytes(b"truncated")
    done = store.finished(run, [good, bad])
    assert set(done) == {good}
    assert (run / "parts" / store.part_name(bad)).with_suffix(".bad").exists()
    with pytest.raises(store.StoreError, match="1 task"):
        store.assemble(run, [good, bad])


def test_part_names_are_safe_and_distinct():
    a = store.part_name(("c", "my variant/1", "grad", "x", "float32"))
    b = store.part_name(("c", "my variant_1", "grad", "x", "float32"))
    assert "/" not in a and " " not in a and a != b


def test_meta_schema_and_latest(tmp_path):
    run = store.new_run(tmp_path)
    meta = store.RunMeta(run_id=run.name, plan={"name": "p"}, started="2026-01-01", status="complete", sessions=({"pid": 1},))
    store.write_meta(run, meta)
    assert store.read_meta(run) == meta
    assert json.loads((run / "meta.json").read_text())["schema_version"] == store.SCHEMA_VERSION
    assert store.latest(tmp_path) is None
    store.set_latest(tmp_path, run.name)
    assert store.latest(tmp_path) == run
    assert store.open_run(tmp_path, run.name) == run
    with pytest.raises(store.StoreError, match="no run 'nope'"):
        store.open_run(tmp_path, "nope")
    store.write_json(run / "meta.json", {"schema_version": 999})
    with pytest.raises(store.StoreError, match="schema 999"):
        store.read_meta(run)
    store.write_json(run / "meta.json", {"schema_version": store.SCHEMA_VERSION, **meta.to_json(), "colour": "red"})
    with pytest.raises(store.StoreError, match="unknown meta.json keys"):
        store.read_meta(run)
