"""Migration files: two branches that take one version number are refused, loudly."""

from __future__ import annotations

from pathlib import Path

import pytest

from repositories.migrations import discover
from schemas.exceptions import MigrationError


def write(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).write_text("SELECT 1;")


def test_contiguous_versions_are_found_in_order(tmp_path: Path) -> None:
    write(tmp_path, "0002_b.up.sql", "0002_b.down.sql", "0001_a.up.sql", "0001_a.down.sql")
    assert [(m.version, m.name) for m in discover(tmp_path)] == [(1, "a"), (2, "b")]


def test_two_names_for_one_version_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.up.sql", "0001_a.down.sql", "0001_b.up.sql", "0001_b.down.sql")
    with pytest.raises(MigrationError, match="two migrations share version 1"):
        discover(tmp_path)


def test_a_gap_is_accepted(tmp_path: Path) -> None:
    # 0004 belongs to a branch that has not landed: 0005 may come first.
    write(tmp_path, "0001_a.up.sql", "0001_a.down.sql", "0003_c.up.sql", "0003_c.down.sql")
    assert [m.version for m in discover(tmp_path)] == [1, 3]


def test_version_zero_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "0000_a.up.sql", "0000_a.down.sql")
    with pytest.raises(MigrationError, match="start at 1"):
        discover(tmp_path)
