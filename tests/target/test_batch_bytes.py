"""max_batch_bytes is a limit, not an estimate: no buffered batch ever passes it."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from singer_sdk.contrib.msgspec import encoder

from target_parquet_parts.sinks import ParquetPartsSink
from tests.target.conftest import part_files, run_target
from tests.target.singer_data import event, record_message, schema_message

LIMIT = 64 * 1024


@pytest.mark.parametrize("config", [{}, {"add_record_metadata": True}], ids=["fast", "sdk"])
def test_a_batch_never_passes_max_batch_bytes(tmp_path, monkeypatch, config):
    out = tmp_path / "out"
    lines = [schema_message()]
    line_bytes: dict[str, int] = {}
    for i in range(400):
        rec = event(i)
        # Every 64th record is tiny, the others ~2 KB of varying size: a sample of every 64th
        # record sees only the tiny ones.
        rec["message"] = "x" if i % 64 == 0 else "x" * (2000 + 37 * (i % 13))
        if i == 200:
            rec["message"] = "y" * (LIMIT + 1)  # larger than the limit alone: a part of its own
        line = record_message(rec)
        lines.append(line)
        line_bytes[rec["sequence_number_str"]] = len(line.encode()) + 1  # with its newline

    buffered: list[tuple[int, int]] = []  # (records, JSON bytes) of each batch at its flush
    real_process_batch = ParquetPartsSink.process_batch

    def measure(self, context):
        records = context.get("records") or []
        # A record buffered undecoded (record_lines.py) is its input line; others are dicts.
        sizes = [len(r) if type(r) is bytes else len(encoder.encode(r)) for r in records]
        buffered.append((len(records), sum(sizes)))
        real_process_batch(self, context)

    monkeypatch.setattr(ParquetPartsSink, "process_batch", measure)
    run_target(out, lines, monkeypatch, max_batch_bytes=LIMIT, **config)

    assert sum(count for count, _ in buffered) == 400
    assert all(size <= LIMIT for count, size in buffered if count > 1), buffered
    assert max(size for _, size in buffered) > LIMIT  # the one oversized record
    for part in part_files(out):
        keys = pq.read_table(part, columns=["sequence_number_str"]).column(0).to_pylist()
        total = sum(line_bytes[k] for k in keys)
        assert len(keys) == 1 or total <= LIMIT, (part.name, len(keys), total)
    # Not one record per part either: batches are filled up to the limit.
    assert len(part_files(out)) <= 2 * (sum(line_bytes.values()) // LIMIT + 1) + 1
