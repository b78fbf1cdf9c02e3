"""Build the checked-in ledger fixtures ``fixtures/v2`` and ``fixtures/v3``.

Run from the repository root: ``.venv/bin/python -m tests.service.ledger.make_fixtures``. Each
fixture is a directory standing in for a run: ``stand_in.json`` (the identity a run would report:
fingerprint, number of training rows, generation), ``run.json`` (only its ``ledger`` record, which
is all the ledger reads), small placeholder model files (the ledger records and checks only their
SHA-256) and ``ledger.sqlite``.

* ``v3``: made by the current code, with a compaction: two deletions on generation 0, a
  compaction to generation 1 (whose files it removed), then a deletion, an alternative and a
  failed request on generation 1.
* ``v2``: made by the current code on generation 0 (a deletion, an alternative computation of
  it, a second deletion, a failed request), then rewritten by hand as schema version 2 stored it:
  no ``compactions`` table, ``user_version`` 2, ``meta.schema_version`` "2". Version 2 and 3
  request records have the same columns, so their row checksums are unchanged.

The fixtures are data: regenerate them only to add a new schema version, never to make a
failing test pass (a changed checksum would mean stored ledgers no longer read).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent / "fixtures"


class StandInRun:
    """What the ledger asks of a run, read from a fixture directory's ``stand_in.json``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        identity = json.loads((self.path / "stand_in.json").read_text())
        self.fingerprint = identity["fingerprint"]
        self.n_train = identity["n_train"]
        self.generation = identity["generation"]
        self.base = SimpleNamespace(dir=self.path / "bases" / str(self.generation) if self.generation else self.path)

    @staticmethod
    def keys_of(ids) -> list[str]:
        """Key of row i: ``user-<i>`` (rows of the stand-in are numbered within their generation)."""
        return [f"user-{int(i)}" for i in ids]


def _write(path: Path, data: bytes) -> tuple[str, int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), len(data)


def _stand_in(directory: Path, fingerprint: str, n_train: int, generation: int) -> StandInRun:
    (directory / "stand_in.json").write_text(json.dumps(
        {"fingerprint": fingerprint, "n_train": n_train, "generation": generation}, indent=1) + "\n")
    return StandInRun(directory)


def _request(book, ids, method, options, out: str, stats=None, fail=False) -> int:
    from miniunlearn.service.ledger import canonical_options

    options_json = canonical_options(options)
    plan = book.plan(np.asarray(ids), method, options_json)
    request_id = book.begin(plan, method, options_json, book.run.path / out)
    if fail:
        book.fail(request_id, RuntimeError("the method did not converge"))
        return request_id
    digest, size = _write(book.run.path / out / "model.safetensors", f"model of request {request_id}\n".encode())
    book.finish(request_id, digest, size, stats or {"time_s": 0.25})
    return request_id


def _start(directory: Path, fingerprint: str, n_train: int):
    """A new ledger for a stand-in run at generation 0, created as ``Ledger.open(create=True)`` does
    (the stand-in's run.json records the ledger already: a real run.json is not part of the fixture)."""
    from miniunlearn.service.ledger import IDS_ENCODING, KEYS_ENCODING, LEDGER_FILE, SCHEMA_VERSION, Ledger, store

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    model_sha, _ = _write(directory / "model.safetensors", b"generation 0 model\n")
    created = "2026-01-02T03:04:05.678+00:00"
    store.create_file(directory / LEDGER_FILE, {
        "format": "miniunlearn-ledger", "schema_version": str(SCHEMA_VERSION), "created": created,
        "run_fingerprint": fingerprint, "run_n_train": str(n_train), "run_model_sha256": model_sha,
        "ids_encoding": IDS_ENCODING, "keys_encoding": KEYS_ENCODING})
    (directory / "run.json").write_text(json.dumps({"ledger": {"file": LEDGER_FILE, "created": created}}) + "\n")
    return Ledger.open(_stand_in(directory, fingerprint, n_train, 0), create=True)


def build_v3(directory: Path) -> None:
    from miniunlearn.service.ledger import encode_keys, ids_sha256, keys_sha256

    with _start(directory, "sha256:fixture-data-v3", 20) as book:
        _request(book, [3, 5], "retrain", {}, "out/a")
        _request(book, [8], "mini", {"tol": 1e-6}, "out/b", stats={"time_s": 0.5, "certificate_rel": 0.01})
        dropped = [3, 5, 8]
        base_sha, _ = _write(directory / "bases" / "1" / "model.safetensors", b"generation 1 model\n")
        compaction = book.begin_compaction({
            "generation": 1, "after_request": book.last_request_id(), "warm_start_request": 2, "n_before": 20,
            "n_after": 17, "n_dropped": 3, "dropped_ids_sha256": ids_sha256(np.asarray(dropped)),
            "dropped_keys_sha256": keys_sha256(StandInRun.keys_of(dropped)),
            "dropped_keys_blob": encode_keys(StandInRun.keys_of(dropped)), "base_fingerprint": "sha256:fixture-base-1",
            "base_model_sha256": base_sha, "base_record_sha256": "0" * 64, "removed_json": None, "stats_json": None,
            "note": None})
        book.run = _stand_in(directory, "sha256:fixture-base-1", 17, 1)  # the switch
        shutil.rmtree(directory / "out")  # files of the previous base
        book.finish_compaction(compaction, ["out/a/model.safetensors", "out/b/model.safetensors"], {"time_s": 1.5})
        _request(book, [0, 4], "retrain", {}, "out/c")
        _request(book, [0, 4], "mini", {}, "out/d", stats={"time_s": 0.5, "certificate_rel": 0.02})
        _request(book, [6], "mini", {}, "out/e", fail=True)


def build_v2(directory: Path) -> None:
    with _start(directory, "sha256:fixture-data-v2", 20) as book:
        _request(book, [3, 5], "retrain", {}, "out/a")
        _request(book, [3, 5], "mini", {}, "out/b", stats={"time_s": 0.5, "certificate_rel": 0.01})
        _request(book, [8, 11], "retrain", {}, "out/c")
        _request(book, [1], "mini", {}, "out/d", fail=True)
    # as version 2 stored it: no compactions table (version 2 and 3 request records are the same)
    db = sqlite3.connect(directory / "ledger.sqlite", isolation_level=None)
    db.execute("DROP TABLE compactions")
    db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    db.execute("PRAGMA user_version = 2")
    db.execute("VACUUM")
    db.close()


def main() -> None:
    for name, build in (("v2", build_v2), ("v3", build_v3)):
        build(HERE / name)
        for leftover in (HERE / name).glob("ledger.sqlite-*"):
            leftover.unlink()
        (HERE / name / "ledger.lock").unlink(missing_ok=True)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
