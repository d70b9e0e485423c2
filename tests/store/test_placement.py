"""Placement: balance, failure-domain caps, and stable shard indices on layout change."""

import collections

import pytest

from appliance.store.placement import Device, PlacementError, build_pg_table, place


def test_six_disks_one_shard_each_and_balanced():
    devs = [Device(f"d{i}") for i in range(6)]
    table = build_pg_table(1024, devs, 6, 2)
    assert all(sorted(row) == sorted(d.id for d in devs) for row in table)
    # each device should hold each shard index about equally often
    per_index = collections.Counter((row[0]) for row in table)
    assert max(per_index.values()) < 1.4 * min(per_index.values())


def test_few_domains_hold_at_most_m_shards():
    devs = [Device(f"d{i}") for i in range(3)]
    for pg in range(200):
        row = place(pg, devs, 6, 2)
        assert max(collections.Counter(row).values()) <= 2
    with pytest.raises(PlacementError):
        place(0, devs[:2], 6, 2)


def test_weight_attracts_proportionally():
    devs = [Device(f"d{i}", weight=2.0 if i == 0 else 1.0) for i in range(12)]
    table = build_pg_table(4096, devs, 6, 2)
    counts = collections.Counter(d for row in table for d in row)
    others = sum(counts[f"d{i}"] for i in range(1, 12)) / 11
    assert counts["d0"] > 1.3 * others


def test_removing_a_device_moves_only_its_shards():
    devs = [Device(f"d{i}") for i in range(10)]
    old = build_pg_table(2048, devs, 6, 2)
    removed = build_pg_table(2048, [d for d in devs if d.id != "d3"], 6, 2, previous=old)
    moved = sum(a != b for ro, rn in zip(old, removed) for a, b in zip(ro, rn))
    lost = sum(row.count("d3") for row in old)
    assert moved == lost  # only the shards that lived on d3 move
    for ro, rn in zip(old, removed):
        for a, b in zip(ro, rn):
            assert a == b or a == "d3"
