"""nestor_core.atomic_file: the one atomic replace of a file that another process reads."""

import json
import os
import stat

import pytest
from nestor_core.atomic_file import write_atomic, write_json_atomic


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "status.json"
    target.write_text("old")
    write_atomic(target, "new")
    assert target.read_text() == "new"
    write_atomic(str(target), b"\x00bytes", durable=True)
    assert target.read_bytes() == b"\x00bytes"
    assert os.listdir(tmp_path) == ["status.json"]


def test_json_and_mode(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"b": 1, "a": 2}, indent=1, sort_keys=True)
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 2, "b": 1}
    assert (tmp_path / "a.json").read_text().startswith('{\n "a"')
    write_atomic(tmp_path / "key.pem", b"secret", mode=0o600)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_json_atomic(target, {"not json": object()})
    assert target.read_text() == "old"
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "x", "data")
    assert os.listdir(tmp_path) == ["model.json"]
