"""Tasks: the units of a sweep. One task is one result, a case x variant x transform x
differentiated argument x dtype, and writes one part of a run. The tasks of one case x
dtype are evaluated together, by one compiled program (a group)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rulelab.model.case import DERIVATIVE_ORDER, get_case
from rulelab.model.plan import Plan


@dataclass(frozen=True)
class Task:
    """One result to compute: ``arg`` is the argument differentiated ("" for value)."""

    case: str
    variant: str
    transform: str
    arg: str
    dtype: str

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.case, self.variant, self.transform, self.arg, self.dtype)

    @property
    def order(self) -> int:
        """Derivative order: 0 for value, 1 for grad and jvp, 2 for grad2."""
        return DERIVATIVE_ORDER[self.transform]

    def __str__(self) -> str:
        arg = f"[{self.arg}]" if self.arg else ""
        return f"{self.case}.{self.variant} {self.transform}{arg} {self.dtype}"


def plan_tasks(plan: Plan) -> list[Task]:
    """Every task of ``plan``, in the order the result tables list them: case, variant,
    transform, argument, dtype."""
    tasks = []
    for name in plan.cases:
        case = get_case(name)
        for variant in plan.variants_of(case):
            for transform in plan.transforms:
                for arg in ("",) if transform == "value" else case.args:
                    for dtype in plan.dtypes:
                        tasks.append(Task(name, variant, transform, arg, dtype))
    return tasks


def execution_order(tasks: Sequence[Task]) -> list[Task]:
    """Tasks in the order they run: the table order, except that float64 comes last
    (it runs with ``jax_enable_x64`` on)."""
    return sorted(tasks, key=lambda t: t.dtype == "float64")


def task_groups(tasks: Sequence[Task]) -> list[tuple[Task, ...]]:
    """``tasks`` grouped by case and dtype (one compiled program each), groups in the
    order of their first task, tasks in their given order within a group."""
    groups: dict[tuple[str, str], list[Task]] = {}
    for t in tasks:
        groups.setdefault((t.case, t.dtype), []).append(t)
    return [tuple(g) for g in groups.values()]


def reference_keys(tasks: Sequence[Task]) -> dict[str, list[tuple[int, str]]]:
    """Per case, the (derivative order, argument) references its tasks need ("" as the
    argument of the value)."""
    need: dict[str, dict[tuple[int, str], None]] = {}
    for t in tasks:
        need.setdefault(t.case, {})[(t.order, t.arg if t.order else "")] = None
    return {c: list(keys) for c, keys in need.items()}
