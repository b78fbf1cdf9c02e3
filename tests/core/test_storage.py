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


def test_a_large_tensor_is_checked_segment_by_segment_and_a_flipped_byte_is_caught(tmp_path, monkeypatch):
    import hashlib

    from miniunlearn.core import storage

    monkeypatch.setattr(storage, "SEGMENT_BYTES", 1 << 20)
    x = torch.arange(300_000, dtype=torch.float64)  # 2.4 MB: three segments, the last one short
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"x": x})
    with open(path, "rb") as handle:  # the recorded digests, recomputed independently with hashlib
        header = handle.read(int.from_bytes(handle.read(8), "little"))
    recorded = __import__("json").loads(header)["__metadata__"]["sha256:x"]
    raw = x.numpy().tobytes()
    expected = [hashlib.sha256(f"torch.float64;(300000,);{i};".encode() + raw[i << 20:(i + 1) << 20]).hexdigest()
                for i in range(3)]
    assert recorded == f"segments={1 << 20}:" + ",".join(expected)
    assert torch.equal(load_tensors(path)[0]["x"], x)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # a bit of the last segment
    atomic_write_bytes(path, bytes(data))
    with pytest.raises(RunError, match="does not match its recorded SHA-256"):
        load_tensors(path)


def _write_with_metadata(path, tensors, metadata):
    """A safetensors file with exactly this metadata (checksum entries included), as a damaged or an
    older file would carry; the metadata digest recomputed so that only the entries under test differ."""
    from safetensors.torch import save_file

    from miniunlearn.core import storage

    metadata = dict(metadata)
    metadata[storage.METADATA_CHECKSUM] = storage._metadata_sha256(metadata)
    save_file(tensors, str(path), metadata=metadata)


def test_a_file_with_one_digest_for_a_large_tensor_still_loads(tmp_path, monkeypatch):
    """Files written before segmented checksums record one digest (computed here with hashlib) however
    large the tensor; so does a small tensor now."""
    import hashlib

    from miniunlearn.core import storage

    monkeypatch.setattr(storage, "SEGMENT_BYTES", 1 << 20)  # x (2.4 MB) would now be written in segments
    x = torch.arange(300_000, dtype=torch.float64)
    digest = hashlib.sha256(b"torch.float64;(300000,);" + x.numpy().tobytes()).hexdigest()
    path = tmp_path / "t.safetensors"
    _write_with_metadata(path, {"x": x}, {"sha256:x": digest})
    assert torch.equal(load_tensors(path)[0]["x"], x)
    _write_with_metadata(path, {"x": x}, {"sha256:x": digest[:-1] + ("0" if digest[-1] != "0" else "1")})
    with pytest.raises(RunError, match="does not match its recorded SHA-256"):
        load_tensors(path)


@pytest.mark.parametrize("recorded", [f"segments={1 << 19}:" + ",".join(["0" * 64] * 5),  # below the minimum
                                      "segments=\u00b2:" + "0" * 64,                    # not a decimal number
                                      "segments=" + "9" * 5000 + ":" + "0" * 64,          # absurdly long
                                      f"segments={1 << 20}:" + "0" * 64,                  # one digest for three
                                      "segments=" + ":" * 3])
def test_a_damaged_segmented_checksum_is_reported_as_corruption(tmp_path, recorded):
    recorded = recorded.encode().decode("unicode_escape")
    x = torch.arange(300_000, dtype=torch.float64)
    path = tmp_path / "t.safetensors"
    _write_with_metadata(path, {"x": x}, {"sha256:x": recorded})
    with pytest.raises(RunError, match="does not match its recorded SHA-256"):
        load_tensors(path)


def test_a_tensor_without_its_checksum_in_a_checksummed_file_is_reported(tmp_path):
    """A flipped bit in a checksum's key must not switch its check off."""
    x, y = torch.arange(10, dtype=torch.float64), torch.ones(3)
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"x": x, "y": y})
    _, metadata = load_tensors(path)
    from miniunlearn.core.storage import tensor_sha256

    _write_with_metadata(path, {"x": x, "y": y}, {**metadata, "sha256:x": tensor_sha256(x), "sha256:z": tensor_sha256(y)})
    with pytest.raises(RunError, match="tensor 'y' has no recorded SHA-256"):
        load_tensors(path)
