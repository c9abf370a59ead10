"""The catalog of exposed actions: fixed registry actions, replaceable upstream sources (SPEC §11)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from openexec_mcp.gate.catalog import Catalog


@dataclass(frozen=True)
class Named:
    name: str
    version: int = 0

    def fingerprint(self) -> tuple[str, int]:
        return (self.name, self.version)


def test_replacing_a_source_changes_only_that_source_and_tells_listeners() -> None:
    catalog = Catalog([Named("echo")])
    heard: list[int] = []
    catalog.on_change(lambda: heard.append(1))
    assert catalog.replace_source("upstream:fs", [Named("fs.read"), Named("fs.write")]) is True
    assert [action.name for action in catalog.all()] == ["echo", "fs.read", "fs.write"]
    assert catalog.replace_source("upstream:fs", [Named("fs.read"), Named("fs.write")]) is False  # same tools
    assert catalog.replace_source("upstream:fs", [Named("fs.read", 1)]) is True
    assert catalog.get("fs.write") is None and catalog.get("echo") is not None
    assert heard == [1, 1]


def test_a_name_taken_by_another_source_is_skipped() -> None:
    catalog = Catalog([Named("fs.read")])
    catalog.replace_source("upstream:fs", [Named("fs.read", 9), Named("fs.list")])
    assert catalog.get("fs.read") == Named("fs.read")
    assert catalog.names("upstream:fs") == ["fs.list"]


def test_the_registry_source_is_fixed() -> None:
    with pytest.raises(ValueError):
        Catalog().replace_source("registry", [])
