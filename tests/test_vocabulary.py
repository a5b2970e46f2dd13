"""The results vocabulary is spelled out once, in rulelab.store.vocabulary: no other
source module names a bucket, copies the key columns, or lists a table's columns."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rulelab.store.vocabulary import KEYS, TABLES, Bucket

SRC = Path(__file__).resolve().parents[1] / "src" / "rulelab"
MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "vocabulary.py")


def literals(tree: ast.AST):
    """(line, strings) of every tuple, list, set or dict-keys literal."""
    for node in ast.walk(tree):
        elts = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [k for k in node.keys if k] if isinstance(node, ast.Dict) else []
        strings = [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if strings:
            yield node.lineno, strings


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_spells_out_the_vocabulary_again(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {b.column for b in Bucket}
    buckets = [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in names]
    assert not buckets, f"bucket names spelled out (use rulelab.store.vocabulary.Bucket): {buckets}"
    for line, strings in literals(tree):
        assert not set(KEYS) <= set(strings), f"line {line}: a copy of the key columns (use vocabulary.KEYS)"
        for name, columns in TABLES.items():
            own = set(columns) - set(KEYS)
            assert len(own & set(strings)) < 0.8 * len(own), f"line {line}: a copy of the {name} table's columns"


def test_the_scan_finds_a_copy(tmp_path: Path) -> None:
    """The scan above can fail: a schema copy and a bucket name are caught."""
    copy = "COLUMNS = " + repr(tuple(TABLES["binned"])) + "\nWORST = 'wrong_nonfinite'\n"
    tree = ast.parse(copy)
    assert any(set(KEYS) <= set(s) for _, s in literals(tree))
    assert any(isinstance(n, ast.Constant) and n.value == Bucket.WRONG_NONFINITE.column for n in ast.walk(tree))
