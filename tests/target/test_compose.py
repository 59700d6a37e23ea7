"""A Singer tap nobody here wrote (tap-jsonl from PyPI) piped into our target."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest

from tests.target.conftest import TARGET_BIN
from tests.target.singer_data import BASE_SEQUENCE, event

pytestmark = pytest.mark.e2e

TAP_JSONL_BIN = os.environ.get(
    "TAP_JSONL_BIN", str(Path(__file__).resolve().parents[2] / ".tools/tap-jsonl/bin/tap-jsonl")
)


# Skipped only on a bare developer run; under CI or scripts/test.sh (which set the variable) a
# missing tool fails the test instead of hiding it.
TAP_JSONL_REQUIRED = bool(os.environ.get("CI") or "TAP_JSONL_BIN" in os.environ)


@pytest.mark.skipif(
    not Path(TAP_JSONL_BIN).exists() and not TAP_JSONL_REQUIRED,
    reason="tap-jsonl not installed (scripts/test.sh installs it)",
)
def test_tap_jsonl_into_target_reads_back_as_one_dataset(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for file_number in range(2):
        with (source / f"events-{file_number}.jsonl").open("w") as handle:
            for i in range(file_number * 700, file_number * 700 + 700):
                handle.write(json.dumps(event(i), ensure_ascii=False) + "\n")
    tap_config = tmp_path / "tap.json"
    tap_config.write_text(
        json.dumps(
            {
                "path": str(source / "*.jsonl"),
                "stream_name": "events",
                "primary_keys": ["log_id", "sequence_number_str"],
            }
        )
    )
    out = tmp_path / "out"
    target_config = tmp_path / "target.json"
    target_config.write_text(json.dumps({"output_dir": str(out), "batch_size_rows": 500}))
    tap = subprocess.Popen(
        [TAP_JSONL_BIN, "--config", str(tap_config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    target = subprocess.run(
        [TARGET_BIN, "--config", str(target_config)],
        stdin=tap.stdout,
        capture_output=True,
        check=False,
    )
    tap.stdout.close()
    assert tap.wait() == 0
    assert target.returncode == 0, target.stderr.decode()[-2000:]
    states = [json.loads(line) for line in target.stdout.decode().splitlines()]
    assert states, "the target relays the tap's STATE"

    parts = sorted((out / "events").glob("part-*.parquet"))
    assert len(parts) >= 3  # 1,400 rows at 500 per part
    dataset = ds.dataset(out / "events", format="parquet")
    table = dataset.to_table()
    assert table.num_rows == 1400
    assert sorted(table.column("sequence_number").to_pylist()) == [
        BASE_SEQUENCE + i for i in range(1400)
    ]
    [(rows, keys, first_time, labels_type)] = duckdb.sql(
        f"select count(*), count(distinct (log_id, sequence_number_str)), min(event_time), "
        f"typeof(any_value(labels)) from read_parquet('{out}/events/*.parquet')"
    ).fetchall()
    assert (rows, keys) == (1400, 1400)
    assert str(first_time).startswith("2024-01-01 00:00:00")
    assert labels_type == "VARCHAR"  # tap-jsonl declares `items: {}`: JSON text
