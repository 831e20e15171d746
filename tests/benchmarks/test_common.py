"""benchmarks/common.py: committed results carry no machine paths."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import common

    return common


def test_portable_paths_in_every_string_of_a_result(common):
    got = common.portable(
        {
            "here": f"{common.ROOT}/runs/a/model",
            "root": str(common.ROOT),
            "other_clone": ["/tmp/cold/runs/b/merged", "gate failed for /tmp/x/runs/c/model (report)"],
            "home": f"{Path.home()}/.cache/instructue",
            "kept": ["runs/d", "/opt/models/e", "a/b/runs/f"],
        }
    )
    assert got["here"] == "runs/a/model" and got["root"] == "."
    assert got["other_clone"] == ["runs/b/merged", "gate failed for runs/c/model (report)"]
    assert got["home"] == "~/.cache/instructue"
    assert got["kept"] == ["runs/d", "/opt/models/e", "a/b/runs/f"]  # nothing else is rewritten
