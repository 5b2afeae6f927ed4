"""Atomic outputs: a failure midway leaves neither a partial file nor a stale temp."""

from __future__ import annotations

import pytest

from advland.core.io import atomic_outputs, write_json


def test_all_outputs_appear_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "sub" / "b.txt"
    with pytest.raises(RuntimeError), atomic_outputs(a, b) as (ta, tb):
        ta.write_text("half")
        raise RuntimeError("killed")
    assert not a.exists() and not b.exists()
    assert list(tmp_path.rglob("*.tmp")) == []
    with atomic_outputs(a, b) as (ta, tb):
        ta.write_text("1")
        tb.write_text("2")
    assert a.read_text() == "1" and b.read_text() == "2"


def test_outputs_get_normal_permissions(tmp_path):
    write_json(tmp_path / "m.json", {"x": 1})
    assert (
        tmp_path / "m.json"
    ).stat().st_mode & 0o044  # readable by group/others, unlike mkstemp's 0600
