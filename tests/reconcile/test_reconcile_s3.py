"""`tap-rapid7-reconcile --dataset s3://...`: the dataset read from object storage (moto's S3).

The target writes the parts to a versioned moto bucket; reconcile reads them back through
pyarrow's S3 filesystem (endpoint and credentials from the environment, as the target's).
"""

from __future__ import annotations

import json

from pipeline_tools.reconcile import cli as reconcile_cli
from tests.reconcile.test_reconcile import HOUR, truth_counter
from tests.reconcile.test_reconcile_damaged import corrupt_column
from tests.target.conftest import run_target
from tests.target.singer_data import BASE_MS, event, events_lines

LOG = event(0)["log_id"]


def _cli(tmp_path, monkeypatch, events, dataset):
    config = tmp_path / "tap.json"
    config.write_text(json.dumps({"api_key": "test-api-key-0123", "log_ids": [LOG]}))
    monkeypatch.setattr(
        reconcile_cli, "_client_counter", lambda cfg: (truth_counter(events), lambda: [LOG], "api")
    )
    start, end = BASE_MS, BASE_MS + HOUR
    return ["--config", str(config), "--dataset", dataset, "--from", str(start), "--to", str(end)]


def test_reconcile_reads_a_dataset_on_s3(s3_bucket, tmp_path, monkeypatch, capsys):
    events = [event(i) for i in range(300)]
    run_target(s3_bucket.uri(), events_lines(300), monkeypatch, batch_size_rows=100)
    args = _cli(tmp_path, monkeypatch, events, s3_bucket.uri())
    assert reconcile_cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"dataset {s3_bucket.uri()} (stream events, 3 parts)" in out
    assert "OK: every window matches" in out
    # A part uploaded twice under another name (another pipeline on the same prefix): named.
    [first, *_] = s3_bucket.keys("data/events/")
    copy = first.replace("part-", "part-copy-")
    s3_bucket.client.copy_object(
        Bucket=s3_bucket.name, Key=copy, CopySource={"Bucket": s3_bucket.name, "Key": first}
    )
    assert reconcile_cli.main([*args, "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["totals"]["duplicates"] == 100
    assert sorted(document["duplicate_parts"][0]["parts"]) == sorted(
        [first.removeprefix("data/"), copy.removeprefix("data/")]
    )


def test_reconcile_names_a_missing_prefix_and_an_unknown_scheme(
    s3_bucket, tmp_path, monkeypatch, capsys
):
    args = _cli(tmp_path, monkeypatch, [], s3_bucket.uri("nothing-here"))
    assert reconcile_cli.main(args) == 2
    assert "no events/ directory" in capsys.readouterr().err
    args = _cli(tmp_path, monkeypatch, [], "hdfs://namenode/lake")
    assert reconcile_cli.main(args) == 2
    assert "--dataset: output_dir 'hdfs://namenode/lake': the scheme 'hdfs://'" in (
        capsys.readouterr().err
    )


def test_reconcile_names_a_damaged_part_on_s3(s3_bucket, tmp_path, monkeypatch, capsys):
    # The target's own zstd parts; one part's sequence_number_str no longer decompresses.
    events = [event(i) for i in range(300)]
    run_target(s3_bucket.uri(), events_lines(300), monkeypatch, batch_size_rows=100)
    key = s3_bucket.keys("data/events/")[1]
    local = tmp_path / "part.parquet"
    local.write_bytes(s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read())
    corrupt_column(local, "sequence_number_str")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=key, Body=local.read_bytes())
    args = _cli(tmp_path, monkeypatch, events, s3_bucket.uri())
    assert reconcile_cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    part = f"s3://{s3_bucket.name}/{key}"
    assert line.startswith(
        f"tap-rapid7-reconcile: cannot read part {part}: column sequence_number_str, row group 0: "
    )
    assert "ZSTD decompression failed" in line
