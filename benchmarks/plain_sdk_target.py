"""A plain Singer SDK ``BatchSink`` target writing parquet: context for target_throughput.py.

This is what a first SDK target looks like: default record validation, the default JSON reader,
``pa.Table.from_pylist`` over the row dicts, one zstd part per batch. It is not part of the
product; it shows how far the product's target is from the SDK's out-of-the-box speed.
Run it as ``python benchmarks/plain_sdk_target.py --config CONFIG --input FILE``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.sinks import BatchSink


class PlainParquetSink(BatchSink):
    """Writes each batch as one parquet part, Arrow schema inferred from the rows."""

    def process_batch(self, context: dict) -> None:
        """Write ``context["records"]`` to ``{output_dir}/{stream}/part-{uuid}.parquet``."""
        directory = Path(self.config["output_dir"]) / self.stream_name
        directory.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(context["records"])
        pq.write_table(table, directory / f"part-{uuid.uuid4().hex}.parquet", compression="zstd")


class PlainParquetTarget(Target):
    """The smallest SDK target that writes the same data."""

    name = "plain-sdk-parquet"
    config_jsonschema = th.PropertiesList(
        th.Property("output_dir", th.StringType, required=True),
    ).to_dict()
    default_sink_class = PlainParquetSink


if __name__ == "__main__":
    PlainParquetTarget.cli()
