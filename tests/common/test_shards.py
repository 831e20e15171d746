"""Shard plans and their part store: deterministic cuts, atomic parts, stale keys cleared."""

from __future__ import annotations

import pyarrow as pa

from components.common import ShardPlan, ShardStore, inputs_key, parquet_bytes, worker_cached


def test_a_plan_cuts_users_in_dataset_order_and_is_the_same_every_time():
    ids = [5, 3, 9, 3, 1, 7, 2]
    plan = ShardPlan.of(ids, 3, "k")
    assert [s.user_ids for s in plan.shards] == [(5, 3, 9), (1, 7, 2)]  # duplicates dropped
    assert plan == ShardPlan.of(ids, 3, "k") and plan.user_ids == [5, 3, 9, 1, 7, 2]
    assert [s.name for s in plan.shards] == ["part-00000.parquet", "part-00001.parquet"]
    assert len(ShardPlan.of([], 3, "k")) == 0


def test_inputs_key_changes_with_any_input():
    base = inputs_key("embed", {"a": 1, "b": [1, 2]})
    assert base == inputs_key("embed", {"b": [1, 2], "a": 1})  # key order does not matter
    assert base != inputs_key("embed", {"a": 2, "b": [1, 2]})
    assert inputs_key(b"x") != inputs_key(b"y")


def test_store_keeps_written_parts_and_clears_other_keys_and_temps(tmp_path):
    plan = ShardPlan.of(range(10), 4, "new")
    (tmp_path / "old").mkdir(parents=True)
    (tmp_path / "old" / "part-00000.parquet").write_bytes(b"stale")
    store = ShardStore(tmp_path, plan).open({"why": "test"})
    assert not (tmp_path / "old").exists() and (store.folder / "manifest.json").exists()
    assert [s.index for s in store.missing()] == [0, 1, 2]
    store.write(1, parquet_bytes(pa.table({"x": [1, 2]})))
    (store.folder / ".part-00002.parquet.tmp-deadbeef").write_bytes(b"half")  # a killed write
    store = ShardStore(tmp_path, plan).open()
    assert [s.index for s in store.missing()] == [0, 2]
    assert store.read(1).column("x").to_pylist() == [1, 2]
    assert not list(store.folder.glob(".*tmp-*"))


def test_worker_cached_builds_once_per_key():
    calls = []
    build = lambda: calls.append(1) or len(calls)  # noqa: E731
    first, t_first = worker_cached(("test-shards", 1), build)
    again, t_again = worker_cached(("test-shards", 1), build)
    assert first == again == 1 and calls == [1] and t_again == 0.0 and t_first >= 0.0
    assert worker_cached(("test-shards", 2), build)[0] == 2
