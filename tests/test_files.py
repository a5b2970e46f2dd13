"""Atomic writes: the old content or the new, never half; no temporary file left behind."""

from __future__ import annotations

import os

import pytest

from rulelab.core.files import atomic_write, temporary_name


def test_a_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write(path, "first")
    atomic_write(path, b"second")
    atomic_write(path, lambda p: p.write_text("third"))
    assert path.read_text() == "third" and os.listdir(tmp_path) == ["a.txt"]


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write(path, "old")

    def half(p):
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_temporary_names_carry_the_process_and_differ_between_calls(tmp_path):
    a, b = temporary_name(tmp_path / "x"), temporary_name(tmp_path / "x")
    assert a != b and f".{os.getpid()}." in a.name and a.parent == tmp_path and a.name.startswith(".x.")
