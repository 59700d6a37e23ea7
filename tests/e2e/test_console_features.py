"""What an InsightIDR console user works with, through `tap-rapid7 | target-parquet-parts`
against the emulator: a log set chosen by name, label names beside the ids, and the key/value
fields Rapid7 parses (``kvp_info``), each checked row by row against the emulator's truth.
"""

from __future__ import annotations

import json

import pyarrow.dataset as ds
import pytest

from logsearch_emulator import EmulatorOptions, running_emulator
from logsearch_emulator.data import LABELS
from logsearch_emulator.kvp import pairs
from tap_rapid7.windows import iso_to_millis
from tests.e2e.pipeline import compare, dataset_keys, start
from tests.e2e.test_truth import tap_config, target_config

pytestmark = pytest.mark.e2e

START = "2026-03-01T00:00:00Z"
END = "2026-03-01T00:20:00Z"


def read_rows(output, stream: str) -> list[dict]:
    return ds.dataset(output / stream, format="parquet").to_table().to_pylist()


def test_a_log_set_by_name_with_label_names_and_kvp_is_the_emulators_truth(tmp_path):
    options = EmulatorOptions(seed=11, log_count=4, logset_count=2, events_per_second=2.0)
    with running_emulator(options) as emu:
        chosen, other = emu.logsets[0], emu.logsets[1]
        assert chosen["log_ids"]
        assert set(chosen["log_ids"]).isdisjoint(other["log_ids"])
        config = tap_config(emu, log_ids=[], logsets=[chosen["name"]], kvp_info=True)
        config.update(start_date=START, end_date=END)
        out = tmp_path / "out"
        start(tmp_path, config, target_config(out)).finish()
        stderr = (tmp_path / "run" / "tap.stderr").read_text()

        # only the log set's logs, every entry of theirs once
        truth = [
            key
            for log_id in chosen["log_ids"]
            for key in emu.truth(iso_to_millis(START), iso_to_millis(END), log_id)
        ]
        result = compare(truth, dataset_keys(out))
        assert result.exact, result.line("logset")
        assert "logsearch_logsets_resolved" in stderr

        rows = read_rows(out, "events")
        labelled = [row for row in rows if row["labels"]]
        assert labelled, "the emulator labels about 5% of entries"
        for row in labelled:
            ids = [label["id"] for label in row["labels"]]
            assert row["label_names"] == [LABELS[i]["name"] for i in ids]
        assert all(row["label_names"] == [] for row in rows if not row["labels"])

        # kvp: what Rapid7 parsed from each message, as {key, value} texts, in message order
        with_pairs = 0
        for row in rows:
            expected = [{"key": k, "value": v} for k, _, _, v, _, _ in pairs(row["message"])]
            assert row["kvp"] == expected, row["message"]
            with_pairs += bool(expected)
        assert with_pairs > len(rows) // 2

        # the labels stream: the management API's list, names and colours
        labels = {row["id"]: row for row in read_rows(out, "labels")}
        assert {i: row["name"] for i, row in labels.items()} == {
            i: label["name"] for i, label in LABELS.items()
        }
        assert labels[next(iter(LABELS))]["color"] == next(iter(LABELS.values()))["color"]
        print(
            "E2E console "
            + json.dumps(
                {
                    "logset": chosen["name"],
                    "rows": len(rows),
                    "labelled": len(labelled),
                    "rows_with_kvp": with_pairs,
                }
            )
        )


def test_an_unknown_log_set_stops_the_tap_before_any_query_naming_it(tmp_path):
    with running_emulator(EmulatorOptions(seed=11, log_count=2, logset_count=2)) as emu:
        config = tap_config(emu, log_ids=[], logsets=["No Such Set"])
        config.update(start_date=START, end_date=END)
        pipe = start(tmp_path, config, target_config(tmp_path / "out"))
        assert pipe.tap.wait(timeout=60) == 1
        pipe.close()
        stderr = (tmp_path / "run" / "tap.stderr").read_text()
        assert "No Such Set" in stderr
        budgets = emu.stats()["budgets"]
        assert budgets["query"]["requests"] == 0  # stopped before any query
        assert budgets["management"]["requests"] >= 1  # the log sets were read
