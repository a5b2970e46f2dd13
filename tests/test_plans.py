"""Plans: the packaged ones load, and every kind of mistake names the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

import rulelab
from rulelab.model.inputs import SweepSpec
from rulelab.model.plan import (
    PACKAGED,
    PlanError,
    find_plan,
    load_plan,
    locate,
    parse_plan,
    plan_from_dict,
    with_overrides,
)


@pytest.fixture(scope="module")
def one_case():
    case = rulelab.make_case(
        "tplan_id",
        "x",
        ("x",),
        rulelab.REALS,
        lambda mp, x: x,
        {"exact": lambda x: x, "other": lambda x: x},
    )
    rulelab.register(case, replace=True)
    yield case
    rulelab.unregister(case.name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_plans_load_by_name(name):
    plan = load_plan(name)
    assert plan.name == name
    assert set(plan.cases) == {c.name for c in rulelab.cases()}
    assert plan.variants is None
    assert plan.transforms == ("value", "grad", "jvp", "grad2")
    assert {"float32", "float16", "bfloat16"} <= set(plan.dtypes)
    assert isinstance(plan.spec("float32", 1), SweepSpec)


def test_packaged_plans_are_also_reachable_as_accuracy_folder():
    top = Path(__file__).resolve().parents[1] / "accuracy"
    assert {p.stem for p in top.glob("*.toml")} >= set(PACKAGED)
    assert find_plan(top / "quick.toml").is_file()


def test_quick_samples_and_default_enumerates():
    quick, default = load_plan("quick"), load_plan("default")
    assert not quick.spec("float16", 1).exhaustive16
    assert default.spec("float16", 1).exhaustive16
    assert "float64" in default.dtypes and "float64" not in quick.dtypes
    # layers: a dtype and an argument count both refine the base
    assert quick.spec("float32", 3).grid_stride >= quick.spec("float32", 2).grid_stride


def test_layers_apply_in_order(tmp_path, one_case):
    plan = load_plan(
        write(
            tmp_path,
            """
cases = ["tplan_id"]
[sweep]
per_binade = 3
grid_stride = 5
[sweep.args2]
grid_stride = 7
[sweep.float32]
per_binade = 11
[sweep.float32.args2]
grid_stride = 13
""",
        )
    )
    assert plan.spec("float16", 1) == SweepSpec(per_binade=3, grid_stride=5)
    assert plan.spec("float16", 2) == SweepSpec(per_binade=3, grid_stride=7)
    assert plan.spec("float32", 1) == SweepSpec(per_binade=11, grid_stride=5)
    assert plan.spec("float32", 2) == SweepSpec(per_binade=11, grid_stride=13)
    assert plan_from_dict(plan.to_dict()) == plan


MISTAKES = [
    # (plan text, line of the mistake, words the message must contain)
    ('cases = ["tplan_id"]\ncolour = "red"\n', 2, ["unknown key 'colour'", "valid keys: description, cases"]),
    ('cases = [\n  "tplan_id",\n  "nope",\n]\n', 3, ["unknown case 'nope'", "tplan_id"]),
    ('cases = ["tplan_id"]\nvariants = ["exact", "fancy"]\n', 2, ["unknown variant 'fancy'", "exact, other"]),
    ('cases = ["tplan_id"]\n\ntransforms = ["value", "hessian"]\n', 3, ["unknown transform 'hessian'", "value, grad, jvp, grad2"]),
    ('cases = ["tplan_id"]\ndtypes = ["float8"]\n', 2, ["unknown dtype 'float8'", "float32, float16, bfloat16"]),
    ('cases = ["tplan_id"]\n[sweep]\nper_binade = 4\nper_binad = 4\n', 4, ["unknown key 'per_binad' in [sweep]", "per_binade"]),
    ('cases = ["tplan_id"]\n[sweep]\nper_binade = 4\n[sweep.float33]\nper_binade = 1\n', 4, ["unknown table 'float33'", "float32"]),
    ('cases = ["tplan_id"]\n[sweep.float32]\nexhaustive16 = 1\n', 3, ["exhaustive16 in [sweep.float32] must be true or false"]),
    ('cases = ["tplan_id"]\n[sweep]\ngrid_stride = 0\n', 3, ["grid_stride in [sweep] must be an integer >= 1"]),
    ('cases = ["tplan_id"]\nseed = "zero"\n', 2, ["seed must be an integer"]),
    ('cases = ["tplan_id"]\nmax_precision = 64\n', 2, ["max_precision must be an integer >= 160"]),
    ('cases = "tplan_id"\ndtypes = "all"\n', 2, ["unknown dtype 'all'"]),
    ('cases = []\n', 1, ["cases is empty"]),
    ('cases = ["tplan_id"\n', 1, ["not valid TOML", "Unclosed array"]),
    ('cases = ["tplan_id"]\nseed = = 1\n', 2, ["not valid TOML"]),
]


@pytest.mark.parametrize("text, line, words", MISTAKES)
def test_each_mistake_names_file_line_and_what_is_valid(tmp_path, one_case, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    for w in words:
        assert w in message, message


def test_unknown_plan_name_lists_the_packaged_ones(tmp_path):
    with pytest.raises(PlanError, match="packaged plans: default, exhaustive, quick"):
        find_plan("quik")
    with pytest.raises(PlanError, match="not a file"):
        find_plan(str(tmp_path / "missing.toml"))


def test_locate_finds_keys_in_tables_and_values_in_arrays():
    text = 'a = 1\n[sweep]\na = 2\n[sweep.float32]\nb = [\n  "x",\n  "y",\n]\n'
    assert locate(text, "a") == 1
    assert locate(text, "a", table="sweep") == 3
    assert locate(text, "b", "y", table="sweep.float32") == 7
    assert locate(text, "", table="sweep.float32") == 4
    assert locate(text, "zzz") is None


def test_overrides_are_checked_like_the_plan(one_case):
    plan = parse_plan('cases = ["tplan_id"]\n', "p.toml")
    narrowed = with_overrides(plan, variants=["exact"], dtypes=["float16,bfloat16"], transforms=["grad"])
    assert narrowed.variants == ("exact",)
    assert narrowed.dtypes == ("float16", "bfloat16")
    assert narrowed.transforms == ("grad",)
    assert plan.variants_of(one_case) == ("exact", "other")
    assert narrowed.variants_of(one_case) == ("exact",)
    with pytest.raises(PlanError, match="--cases: unknown case 'nope'; valid cases: .*tplan_id"):
        with_overrides(plan, cases=["nope"])
    with pytest.raises(PlanError, match="--dtypes: unknown dtype 'f32'"):
        with_overrides(plan, dtypes=["f32"])
