import os

import pytest
import torch

from miniunlearn.core.errors import RunError
from miniunlearn.core.storage import atomic_write_bytes, atomic_write_json, load_tensors, read_json, save_tensors


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "file.json"
    atomic_write_json(target, {"a": 1})

    def failing(tmp):
        tmp.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    from miniunlearn.core.storage import atomic_write

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert read_json(target) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["file.json"]  # no temporary left behind


def test_truncated_and_corrupted_safetensors_are_reported(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"x": torch.arange(100, dtype=torch.float64)})
    tensors, _ = load_tensors(path)
    assert torch.equal(tensors["x"], torch.arange(100, dtype=torch.float64))
    data = path.read_bytes()
    atomic_write_bytes(path, data[: len(data) // 2])
    with pytest.raises(RunError, match="corrupted or truncated|could not be read"):
        load_tensors(path)
    atomic_write_bytes(path, b"\xff" * 64)
    with pytest.raises(RunError):
        load_tensors(path)
    with pytest.raises(RunError, match="not found"):
        load_tensors(tmp_path / "missing.safetensors")


def test_corrupted_json_is_reported(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RunError, match="corrupted"):
        read_json(tmp_path / "run.json", "run.json")
