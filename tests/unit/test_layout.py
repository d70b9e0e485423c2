"""The node's disk layout and disk labels (appliance.node), on real directories."""

import json

import pytest

from appliance import node


def test_first_start_labels_every_disk_and_later_starts_check_the_labels(tmp_path):
    layout = node.load_or_create_layout(tmp_path, None, None)
    assert [node.disk_problem(layout, i) for i in range(6)] == [None] * 6
    again = node.load_or_create_layout(tmp_path, None, None)
    assert again == layout and len(layout.node_id) == 32
    label = json.loads((tmp_path / "disks" / "disk4" / node.DISK_LABEL).read_text())
    assert label == {"node_id": layout.node_id, "device": "d4"}

    (tmp_path / "disks" / "disk4" / node.DISK_LABEL).write_text("{not json")
    assert "cannot read the label" in node.disk_problem(layout, 4)
    (tmp_path / "disks" / "disk5" / node.DISK_LABEL).unlink()
    assert "is the disk mounted?" in node.disk_problem(layout, 5)
    (tmp_path / "disks" / "disk5").rmdir()
    assert "is not a directory" in node.disk_problem(layout, 5)
    node.load_or_create_layout(tmp_path, None, None)
    assert not (tmp_path / "disks" / "disk5").exists()  # a missing disk is not recreated


def test_a_layout_from_before_labels_labels_the_disks_that_are_there(tmp_path):
    disks = [tmp_path / f"disk{i}" for i in range(3)]
    for d in disks[:2]:
        (d / "shards").mkdir(parents=True)
    (tmp_path / "appliance.json").write_text(
        json.dumps({"disks": [str(d) for d in disks], "pool": "replicated:3"}))
    layout = node.load_or_create_layout(tmp_path, None, None)
    assert layout.node_id
    assert [node.disk_problem(layout, i) is None for i in range(3)] == [True, True, False]
    assert json.loads((tmp_path / "appliance.json").read_text())["node_id"] == layout.node_id


def test_first_start_refuses_a_disk_named_twice_or_missing(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(node.SetupError, match="named twice"):
        node.load_or_create_layout(tmp_path / "n", [str(tmp_path / "a")] * 2, "replicated:2")
    with pytest.raises(node.SetupError, match="not a directory"):
        node.load_or_create_layout(tmp_path / "n", [str(tmp_path / "a"), str(tmp_path / "b")],
                                   "replicated:2")
