"""Black Friday VIP users: an Apache Beam pipeline (the Dataflow step of the tutorial).

From the purchases in ``samples.blackfriday`` (one row per user and product bought), build one
row per user: the user's attributes, how many purchases they made and what they spent in total,
and the label ``is_vip``: total spent above the 90th percentile of all users' totals. Then split
the users 80/20 into ``train`` and ``eval`` by a hash of ``User_ID``.

The same result comes from one SQL statement, ``vip.sql`` next to this file; the two agree
row for row (same labels, same split), because:

* a user's attributes are the ``MIN`` of each column over their rows, in both;
* the percentile is the exact ``PERCENTILE_CONT`` (linear interpolation between the two
  nearest of the sorted totals), not an approximate quantile, and ``is_vip`` is strictly
  ``total_purchase > percentile``;
* the split is ``ABS(MOD(FARM_FINGERPRINT(CAST(User_ID AS STRING)), 10)) < 8`` (train), which
  `mlengine.beam.HashSplit` reproduces exactly.

Run it (see README.md)::

    mlengine datasets load-sample blackfriday
    mlengine preprocess pipeline.py -- --output out/vip --format tfrecord
    mlengine preprocess pipeline.py -- --output_table features.vip_users
    python pipeline.py --output out/vip     # the same, without mlengine's runner checks
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from mlengine.beam import (
    AggregatePerKey,
    HashSplit,
    PercentileCont,
    ReadFromWarehouse,
    WriteToCsvShards,
    WriteToJsonlShards,
    WriteToParquetShards,
    WriteToTFRecordShards,
    WriteToWarehouse,
)

USER_COLUMNS = (
    "Gender",
    "Age",
    "Occupation",
    "City_Category",
    "Stay_In_Current_City_Years",
    "Marital_Status",
)
VIP_PERCENTILE = 0.9
TRAIN_BUCKETS, BUCKETS = 8, 10  # 80/20
WRITERS = {
    "parquet": WriteToParquetShards,
    "csv": WriteToCsvShards,
    "tfrecord": WriteToTFRecordShards,
    "jsonl": WriteToJsonlShards,
}
OUTPUT_SCHEMA = (
    "User_ID:INT64,Gender:STRING,Age:STRING,Occupation:INT64,City_Category:STRING,"
    "Stay_In_Current_City_Years:STRING,Marital_Status:INT64,purchases:INT64,"
    "total_purchase:INT64,is_vip:BOOL"
)


class UserSummary(beam.CombineFn):
    """Per user: [purchases, total spent, MIN of each user column (None while unseen)].

    One pass over the rows; SQL's ``COUNT(*)``, ``SUM(Purchase)`` and ``MIN(column)`` (NULLs
    ignored)."""

    def create_accumulator(self) -> list[Any]:
        return [0, 0, *([None] * len(USER_COLUMNS))]

    def add_input(self, summary: list[Any], row: dict[str, Any]) -> list[Any]:
        summary[0] += 1
        summary[1] += row["Purchase"] or 0
        for index, column in enumerate(USER_COLUMNS, start=2):
            value = row[column]
            if value is not None and (summary[index] is None or value < summary[index]):
                summary[index] = value
        return summary

    def merge_accumulators(self, summaries: Iterable[list[Any]]) -> list[Any]:
        merged = self.create_accumulator()
        for summary in summaries:
            merged[0] += summary[0]
            merged[1] += summary[1]
            for index in range(2, len(merged)):
                value = summary[index]
                if value is not None and (merged[index] is None or value < merged[index]):
                    merged[index] = value
        return merged

    def extract_output(self, summary: list[Any]) -> list[Any]:
        return summary


def user_row(user: tuple[int, list[Any]]) -> dict[str, Any]:
    user_id, summary = user
    row: dict[str, Any] = {"User_ID": user_id}
    row.update(zip(USER_COLUMNS, summary[2:], strict=True))
    row["purchases"] = summary[0]
    row["total_purchase"] = summary[1]
    return row


def label(user: dict[str, Any], vip_threshold: float | None) -> dict[str, Any]:
    user["is_vip"] = vip_threshold is not None and user["total_purchase"] > vip_threshold
    return user


def with_split(user: dict[str, Any], split: str) -> dict[str, Any]:
    return {**user, "split": split}


def read_purchases(
    pipeline: beam.Pipeline, args: argparse.Namespace, output: str
) -> beam.PCollection:
    columns = ", ".join(["User_ID", *USER_COLUMNS, "Purchase"])
    if args.input:
        reader = "read_parquet" if args.input.endswith((".parquet", ".pq")) else "read_csv"
        source = f"{reader}('{args.input.replace(chr(39), chr(39) * 2)}')"
        return pipeline | "Read" >> ReadFromWarehouse(
            f"SELECT {columns} FROM {source}", warehouse=":memory:", output=output
        )
    return pipeline | "Read" >> ReadFromWarehouse(
        f"SELECT {columns} FROM {args.table}", warehouse=args.warehouse, output=output
    )


def summarize_per_row(purchases: beam.PCollection) -> beam.PCollection:
    """The classic form: one element per purchase, combined per user in Python."""
    return (
        purchases
        | "ByUser" >> beam.Map(lambda row: (row["User_ID"], row))
        | "Summarize" >> beam.CombinePerKey(UserSummary())
        | "UserRow" >> beam.Map(user_row)
    )


def summarize_batched(purchases: beam.PCollection) -> beam.PCollection:
    """The same per-user rows from Arrow record batches, grouped with pyarrow: no per-row
    Python work, several times faster on Beam's pure-Python runner."""
    aggregations: dict[str, tuple[str | None, str]] = {
        column: (column, "min") for column in USER_COLUMNS
    }
    aggregations["purchases"] = (None, "count")
    aggregations["total_purchase"] = ("Purchase", "sum")
    return purchases | "Summarize" >> AggregatePerKey("User_ID", aggregations)


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    if args.per_row:
        users = summarize_per_row(read_purchases(pipeline, args, "rows"))
    else:
        users = summarize_batched(read_purchases(pipeline, args, "arrow"))
    threshold = (
        users
        | "Totals" >> beam.Map(lambda user: user["total_purchase"])
        | "Percentile" >> beam.CombineGlobally(PercentileCont(args.vip_percentile))
    )
    labelled = users | "Label" >> beam.Map(label, beam.pvalue.AsSingleton(threshold))
    splits = labelled | "Split" >> HashSplit("User_ID", TRAIN_BUCKETS, BUCKETS)

    if args.output_table:
        (
            (
                splits.train | "TagTrain" >> beam.Map(with_split, "train"),
                splits.eval | "TagEval" >> beam.Map(with_split, "eval"),
            )
            | "Merge" >> beam.Flatten()
            | "WriteTable"
            >> WriteToWarehouse(
                args.output_table,
                warehouse=args.warehouse,
                schema=OUTPUT_SCHEMA + ",split:STRING",
            )
        )
    if args.output:
        writer = WRITERS[args.format]
        prefix = args.output.rstrip("/")
        splits.train | "WriteTrain" >> writer(f"{prefix}/train", schema=OUTPUT_SCHEMA)
        splits.eval | "WriteEval" >> writer(f"{prefix}/eval", schema=OUTPUT_SCHEMA)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="samples.blackfriday", help="Warehouse table to read.")
    parser.add_argument("--warehouse", default=None, help="Warehouse file (default: setting).")
    parser.add_argument("--input", default=None, help="A CSV or Parquet file instead of --table.")
    parser.add_argument("--output", default=None, help="Folder for train-*/eval-* shards.")
    parser.add_argument("--format", choices=sorted(WRITERS), default="parquet")
    parser.add_argument("--output_table", default=None, help="dataset.table with a split column.")
    parser.add_argument("--vip_percentile", type=float, default=VIP_PERCENTILE)
    parser.add_argument(
        "--per_row",
        action="store_true",
        help="Summarize users one purchase at a time (the classic form; slower).",
    )
    args, pipeline_args = parser.parse_known_args(argv)
    if not args.output and not args.output_table:
        parser.error("give --output FOLDER and/or --output_table DATASET.TABLE")
    return args, pipeline_args


def run(argv: Sequence[str] | None = None) -> None:
    args, pipeline_args = parse_args(argv)
    with beam.Pipeline(options=PipelineOptions(pipeline_args)) as pipeline:
        build(pipeline, args)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    run()
