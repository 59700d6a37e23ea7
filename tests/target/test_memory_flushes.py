"""A flush leaves no reference cycle behind.

The CLI freezes the start-up heap and raises the GC thresholds (``TargetParquetParts.invoke``),
so the cyclic collector runs rarely: garbage that only it can free (a reference cycle) stays in
memory far longer than a flush, and a long-lived target that flushes at every STATE grew by the
size of what each flush left behind. Reading a part's footer back through
``FileMetaData.schema`` left one such cycle per part (``FileMetaData`` → its cached
``ParquetSchema`` → ``parent``, the same ``FileMetaData``, holding the C++ footer).

Each test writes many parts with automatic collection off and the collector saving what it
finds (``gc.DEBUG_SAVEALL``), then asks ``gc.collect()`` what the writes left: nothing of
pyarrow's footer types, and fewer objects than parts (so nothing per part). No timing.
``benchmarks/memory_flushes.py`` measures the effect on a real process's RSS.
"""

from __future__ import annotations

import gc
import pickle
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from target_parquet_parts.objectstore import ObjectPartWriter, ObjectStorage, ObjectStore
from target_parquet_parts.parts import PartWriter
from target_parquet_parts.storage import parse_location
from tests.target.conftest import part_files, run_target
from tests.target.singer_data import event, record_message, schema_message, state_message

PARTS = 60
FOOTER_TYPES = {"FileMetaData", "ParquetSchema", "ColumnSchema", "RowGroupMetaData"}


@dataclass
class Garbage:
    """What ``gc.collect()`` found unreachable: only cycles (the rest is freed at once)."""

    found: int = 0
    types: Counter[str] = field(default_factory=Counter)

    def footer_objects(self) -> dict[str, int]:
        return {name: count for name, count in self.types.items() if name in FOOTER_TYPES}


@contextmanager
def cycle_garbage() -> Iterator[Garbage]:
    """Collect, switch automatic collection off, run the block, then count what it left."""
    garbage = Garbage()
    was_enabled = gc.isenabled()
    flags = gc.get_debug()
    gc.collect()
    gc.disable()
    try:
        yield garbage
        gc.set_debug(flags | gc.DEBUG_SAVEALL)
        garbage.found = gc.collect()
        garbage.types = Counter(type(item).__name__ for item in gc.garbage)
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()
        gc.collect()


def small_table(index: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array([index, index + 1], pa.int64()),
            "message": ["a", f"b{index}"],
            "nested": [{"at": "x"}, None],
        }
    )


def assert_nothing_per_part(garbage: Garbage, parts: int) -> None:
    assert garbage.footer_objects() == {}, garbage.types.most_common(8)
    assert garbage.found < parts, garbage.types.most_common(8)


def test_writing_local_parts_leaves_no_reference_cycle(tmp_path: Path) -> None:
    writer = PartWriter("zstd")
    published: list[Path] = []
    writer.write(small_table(-1), tmp_path / "events")  # the first part of a directory sweeps it
    with cycle_garbage() as garbage:
        for index in range(PARTS):
            writer.write(small_table(index), tmp_path / "events", published.append)
    assert_nothing_per_part(garbage, PARTS)
    assert len(published) == PARTS
    assert sum(pq.read_metadata(part).num_rows for part in published) == 2 * PARTS


def test_the_cycle_this_guards_against_is_still_detected(tmp_path: Path) -> None:
    """The check itself works: the old read-back (``metadata.schema``) is seen leaving a cycle."""
    part = tmp_path / "part.parquet"
    pq.write_table(small_table(0), part)
    with cycle_garbage() as garbage:
        for _ in range(5):
            pq.read_metadata(part).schema.to_arrow_schema()
    assert garbage.footer_objects() == {"FileMetaData": 5, "ParquetSchema": 5}


@dataclass
class MemoryStore:
    """The one call ``ObjectPartWriter.write`` makes on a store: a PUT of a new key."""

    objects: dict[str, bytes] = field(default_factory=dict)

    def put_new(self, key: str, data: bytes) -> str:
        assert key not in self.objects
        self.objects[key] = data
        return f'"{len(self.objects)}"'


@pytest.mark.parametrize("journaled", [False, True], ids=["no-journal", "journal"])
def test_encoding_object_parts_leaves_no_reference_cycle(journaled: bool) -> None:
    location = parse_location("s3://lake/data")
    assert location is not None
    store = MemoryStore()
    writer = ObjectPartWriter(ObjectStorage(location, cast(ObjectStore, store)), "zstd", None)
    journal: list[str] = []
    before_publish: Callable[[str], None] | None = journal.append if journaled else None
    writer.write(small_table(-1), ("events",), before_publish)
    with cycle_garbage() as garbage:
        for index in range(PARTS):
            writer.write(small_table(index), ("events",), before_publish)
    assert_nothing_per_part(garbage, PARTS)
    assert len(store.objects) == PARTS + 1
    assert len(journal) == (PARTS + 1 if journaled else 0)
    rows = sum(pq.read_metadata(pa.BufferReader(body)).num_rows for body in store.objects.values())
    assert rows == 2 * (PARTS + 1)


def flush_per_state_run(output_dir: Path, flushes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [schema_message()]
    for index in range(flushes):
        lines += [record_message(event(index)), state_message({"last": index})]
    _, capture = run_target(output_dir, lines, monkeypatch, state_max_lag_seconds=0)
    assert capture.states[-1] == {"last": flushes - 1}
    assert len(part_files(output_dir)) == flushes


def test_a_run_flushing_at_every_state_leaves_nothing_per_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole flush path (sink, journal, part, STATE): a short run and a long one leave the
    same garbage (the run's own objects), not more per flush."""
    flush_per_state_run(tmp_path / "warm-up", 2, monkeypatch)
    with cycle_garbage() as short:
        flush_per_state_run(tmp_path / "short", 5, monkeypatch)
    with cycle_garbage() as long:
        flush_per_state_run(tmp_path / "long", 5 + PARTS, monkeypatch)
    assert long.footer_objects() == {}, long.types.most_common(8)
    assert long.found - short.found < PARTS, (long.types - short.types).most_common(8)


def test_the_iceberg_file_io_leaves_no_reference_cycle() -> None:
    """pyiceberg's PyArrowFileIO caches a bound method of itself (a cycle per FileIO, about
    three per commit); ours keeps the cache through a weak reference, and still works,
    pickled too."""
    from pyiceberg.io.pyarrow import PyArrowFileIO

    from target_parquet_parts.iceberg_io import DurableLocalFileIO

    with cycle_garbage() as theirs:
        for _ in range(PARTS):
            PyArrowFileIO({}).fs_by_scheme("file", None)
    assert theirs.found >= PARTS  # the cycle this guards against is still pyiceberg's
    with cycle_garbage() as ours:
        for _ in range(PARTS):
            io = DurableLocalFileIO({})
            assert io.fs_by_scheme("file", None) is io.fs_by_scheme("file", None)  # cached
    assert ours.found == 0, ours.types.most_common(8)
    copy = pickle.loads(pickle.dumps(DurableLocalFileIO({})))
    assert copy.fs_by_scheme("file", None) is not None


def test_iceberg_commits_leave_no_cycle_past_the_periodic_collection(tmp_path: Path) -> None:
    """pyiceberg's SQL catalog leaves SQLAlchemy expression cycles at each commit (about seven
    objects); with the collector as rare as the CLI makes it they stayed for the whole run. The
    writer collects the young generations every ``COLLECT_EVERY_COMMITS`` commits: after a
    multiple of that many, fewer objects are left than commits."""
    from target_parquet_parts.iceberg import COLLECT_EVERY_COMMITS, IcebergWriter
    from target_parquet_parts.settings import TargetSettings

    writer = IcebergWriter(TargetSettings(output_dir=str(tmp_path)), "run")
    commits = 2 * COLLECT_EVERY_COMMITS

    def commit(index: int) -> None:
        writer.write_batch(
            "events", small_table(index), keys=["id"], partition_field=None, state_index=index
        )

    try:
        for index in range(COLLECT_EVERY_COMMITS):  # warm-up: a multiple, the count restarts
            commit(index)
        with cycle_garbage() as garbage:
            for index in range(commits):
                commit(COLLECT_EVERY_COMMITS + index)
    finally:
        writer.close()
    assert garbage.found < commits, garbage.types.most_common(8)


def object_store_run(uri: str, flushes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [schema_message()]
    for index in range(flushes):
        lines += [record_message(event(index)), state_message({"last": index})]
    _, capture = run_target(uri, lines, monkeypatch, state_max_lag_seconds=0)
    assert len(capture.states) == flushes


@pytest.mark.parametrize("collecting", [True, False], ids=["collected", "check-detects"])
def test_object_store_flushes_leave_no_cycle_past_the_periodic_collection(
    s3_bucket, monkeypatch: pytest.MonkeyPatch, collecting: bool
) -> None:
    """botocore's requests leave reference cycles (two requests per part, plus the lock's);
    with the collector as rare as the CLI makes it they stayed for the whole run (S3 on moto:
    0.35 KiB per flush). The target collects the young generations every
    ``COLLECT_EVERY_FLUSHES`` flushes: a run longer by twice that many leaves fewer objects
    more than flushes more. Without the collection (the second case) the check sees them."""
    from target_parquet_parts import target as target_module

    if not collecting:
        monkeypatch.setattr(target_module, "COLLECT_EVERY_FLUSHES", 10**9)
    more = 2 * target_module.COLLECT_EVERY_FLUSHES if collecting else 100
    object_store_run(s3_bucket.uri("warm-up"), 2, monkeypatch)
    with cycle_garbage() as short:
        object_store_run(s3_bucket.uri("short"), 5, monkeypatch)
    with cycle_garbage() as long:
        object_store_run(s3_bucket.uri("long"), 5 + more, monkeypatch)
    left = long.found - short.found
    assert (left < more) is collecting, (left, (long.types - short.types).most_common(8))
