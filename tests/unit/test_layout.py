"""The node's disk layout and disk labels (appliance.disks), on real directories."""

import json

import pytest

from appliance import disks


def test_first_start_labels_every_disk_and_later_starts_check_the_labels(tmp_path):
    layout = disks.load_or_create_layout(tmp_path, None, None)
    assert [disks.disk_problem(layout, i) for i in range(6)] == [None] * 6
    again = disks.load_or_create_layout(tmp_path, None, None)
    assert again == layout and len(layout.node_id) == 32
    label = json.loads((tmp_path / "disks" / "disk4" / disks.DISK_LABEL).read_text())
    assert label == {"node_id": layout.node_id, "device": "d4", "disk_id": label["disk_id"]}
    assert len({json.loads((tmp_path / "disks" / f"disk{i}" / disks.DISK_LABEL).read_text())
                ["disk_id"] for i in range(6)}) == 6

    (tmp_path / "disks" / "disk4" / disks.DISK_LABEL).write_text("{not json")
    assert "cannot read the label" in disks.disk_problem(layout, 4)
    (tmp_path / "disks" / "disk5" / disks.DISK_LABEL).unlink()
    assert "is the disk mounted?" in disks.disk_problem(layout, 5)
    (tmp_path / "disks" / "disk5").rmdir()
    assert "is not a directory" in disks.disk_problem(layout, 5)
    disks.load_or_create_layout(tmp_path, None, None)
    assert not (tmp_path / "disks" / "disk5").exists()  # a missing disk is not recreated


def test_a_layout_from_before_labels_labels_the_disks_that_are_there(tmp_path):
    paths = [tmp_path / f"disk{i}" for i in range(3)]
    for d in paths[:2]:
        (d / "shards").mkdir(parents=True)
    (tmp_path / "appliance.json").write_text(
        json.dumps({"disks": [str(d) for d in paths], "pool": "replicated:3"}))
    layout = disks.load_or_create_layout(tmp_path, None, None)
    assert layout.node_id
    assert [disks.disk_problem(layout, i) is None for i in range(3)] == [True, True, False]
    assert json.loads((tmp_path / "appliance.json").read_text())["node_id"] == layout.node_id


def test_first_start_refuses_a_disk_named_twice_or_missing(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(disks.SetupError, match="named twice"):
        disks.load_or_create_layout(tmp_path / "n", [str(tmp_path / "a")] * 2, "replicated:2")
    with pytest.raises(disks.SetupError, match="not a directory"):
        disks.load_or_create_layout(tmp_path / "n", [str(tmp_path / "a"), str(tmp_path / "b")],
                                   "replicated:2")
