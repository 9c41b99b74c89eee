"""Shard writers: Parquet, CSV, TFRecord (tf.train.Example) and JSON lines, read back."""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.tfrecordio import _TFRecordUtil

from mlengine.beam import (
    WriteToCsvShards,
    WriteToJsonlShards,
    WriteToParquetShards,
    WriteToTFRecordShards,
    _shards,
    encode_example,
)
from mlengine.errors import InvalidArgument

WRITERS = {
    "parquet": WriteToParquetShards,
    "csv": WriteToCsvShards,
    "jsonl": WriteToJsonlShards,
    "tfrecord": WriteToTFRecordShards,
}
ROWS: list[dict[str, Any]] = [
    {"id": index, "name": f"user {index}", "score": index / 4, "vip": index % 3 == 0}
    for index in range(10)
]
ROWS[4]["name"] = None  # a null, and a value with a comma and a quote
ROWS[5]["name"] = 'said "hi", left'


def read_records(path: Path) -> list[bytes]:
    records: list[bytes] = []
    with open(path, "rb") as handle:
        while True:
            record = _TFRecordUtil.read_record(handle)
            if record is None:
                return records
            records.append(record)


def read_shard(kind: str, path: Path) -> list[dict[str, Any]]:
    """Rows as plain Python values, in the file's order (TFRecord: the encoded Examples)."""
    if kind == "parquet":
        return pq.read_table(path).to_pylist()
    if kind == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if kind == "csv":  # the columns of ROWS, typed back
        return [
            {
                "id": int(row["id"]),
                "name": row["name"] or None,
                "score": float(row["score"]),
                "vip": {"true": True, "false": False}[row["vip"]],
            }
            for row in csv.DictReader(io.StringIO(path.read_text()))
        ]
    return [{"example": record} for record in read_records(path)]


def expected_rows(kind: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if kind == "tfrecord":
        return [{"example": encode_example(row)} for row in rows]
    return rows


def run_write(kind: str, prefix: Path, rows: list[dict[str, Any]], **kwargs: Any) -> list[str]:
    """Write `rows`; the transform's output (the shard names) must be the files written."""
    names_file = prefix.parent / f"{prefix.name}.names.json"
    with beam.Pipeline() as pipeline:
        names = pipeline | beam.Create(rows) | WRITERS[kind](str(prefix), **kwargs)
        _ = (
            names
            | beam.combiners.ToList()
            | beam.Map(lambda found: names_file.write_text(json.dumps(sorted(found))))
        )
    files = sorted(str(path) for path in prefix.parent.glob(f"{prefix.name}-*"))
    assert json.loads(names_file.read_text()) == files
    names_file.unlink()
    return files


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_rows_round_trip_through_three_shards(tmp_path: Path, kind: str) -> None:
    prefix = tmp_path / "out" / "part"
    files = run_write(kind, prefix, ROWS, num_shards=3)
    suffix = {"tfrecord": ".tfrecord", "jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}
    assert [Path(name).name for name in files] == [
        f"part-0000{index}-of-00003{suffix[kind]}" for index in range(3)
    ]
    shards = [read_shard(kind, Path(name)) for name in files]
    assert sorted(len(shard) for shard in shards) == [3, 3, 4]  # spread evenly
    found = [row for shard in shards for row in shard]
    key = json.dumps if kind != "tfrecord" else repr
    assert sorted(map(key, found)) == sorted(map(key, expected_rows(kind, ROWS)))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".temp-mlengine")]


def test_csv_has_one_header_per_shard_and_quotes_when_needed(tmp_path: Path) -> None:
    files = run_write("csv", tmp_path / "rows", ROWS, num_shards=2)
    for name in files:
        lines = Path(name).read_text().splitlines()
        assert lines[0] == "id,name,score,vip"
    text = "".join(Path(name).read_text() for name in files)
    assert '"said ""hi"", left"' in text


def test_a_new_write_replaces_the_old_shards(tmp_path: Path) -> None:
    prefix = tmp_path / "data"
    run_write("jsonl", prefix, ROWS, num_shards=4)
    files = run_write("jsonl", prefix, ROWS[:2], num_shards=1)
    assert [Path(name).name for name in files] == ["data-00000-of-00001.jsonl"]


def test_more_shards_than_rows_gives_empty_shards(tmp_path: Path) -> None:
    files = run_write("parquet", tmp_path / "few", ROWS[:2], num_shards=3)
    assert [pq.read_table(name).num_rows for name in files] == [0, 1, 1]
    assert all(pq.read_schema(name).names == list(ROWS[0]) for name in files)


def test_schema_is_inferred_from_every_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_shards, "CHUNK_ROWS", 2)  # five chunks of two rows
    rows: list[dict[str, Any]] = [{"a": index} for index in range(10)]
    for row in rows[:4]:
        row["b"] = None  # all-null in the first chunks: the type comes from later ones
    for row in rows[4:]:
        row["b"] = f"b{row['a']}"
    rows[9]["c"] = 1.5  # a key that only the last row has
    files = run_write("parquet", tmp_path / "inferred", rows)
    assert len(files) == 5  # num_shards=0: one shard per chunk
    table = pa.concat_tables(pq.read_table(name) for name in files)
    assert table.schema == pa.schema([("a", pa.int64()), ("b", pa.string()), ("c", pa.float64())])
    assert sorted(table.to_pylist(), key=lambda row: row["a"]) == [
        {"a": row["a"], "b": row.get("b"), "c": row.get("c")} for row in rows
    ]


def test_an_explicit_schema_sets_columns_and_types(tmp_path: Path) -> None:
    files = run_write("parquet", tmp_path / "typed", ROWS, schema="id:INT64,score:FLOAT64,day:DATE")
    table = pq.read_table(files[0])
    assert table.schema == pa.schema(
        [("id", pa.int64()), ("score", pa.float64()), ("day", pa.date32())]
    )
    assert table.column("day").null_count == len(ROWS)


def test_csv_refuses_nested_columns(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="CSV cannot hold the column 'tags'"):
        run_write("csv", tmp_path / "nested", [{"tags": ["a", "b"]}])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_shards": -1}, "'num_shards' field of WriteToParquetShards"),
        ({"schema": 3}, "'schema' field of WriteToParquetShards"),
        ({"path_prefix": ""}, "'path_prefix' field of WriteToParquetShards"),
    ],
)
def test_writers_reject_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    arguments = {"path_prefix": str(tmp_path / "x"), **kwargs}
    pipeline = beam.Pipeline()
    with pytest.raises(InvalidArgument, match=message):
        _ = pipeline | beam.Create(ROWS) | WriteToParquetShards(**arguments)


def test_encode_example_wire_format() -> None:
    # Hand-checked bytes: Example{features{feature{key:"a" value{int64_list{value:[1, -1]}}}}}
    minus_one = b"\xff" * 9 + b"\x01"
    int64_list = b"\x0a" + bytes([1 + len(minus_one)]) + b"\x01" + minus_one
    feature = b"\x1a" + bytes([len(int64_list)]) + int64_list
    entry = b"\x0a\x01a" + b"\x12" + bytes([len(feature)]) + feature
    features = b"\x0a" + bytes([len(entry)]) + entry
    assert encode_example({"a": [1, -1]}) == b"\x0a" + bytes([len(features)]) + features
    floats = encode_example({"f": 0.5})
    assert floats.endswith(b"\x12\x06\x0a\x04" + struct.pack("<f", 0.5))
    assert encode_example({"skip": None}) == b""
    with pytest.raises(TypeError, match="feature 'bad'"):
        encode_example({"bad": {"nested": 1}})
    with pytest.raises(ValueError, match="feature 'big'"):
        encode_example({"big": 1 << 64})


TF_CHECK = """
import json, sys
import tensorflow as tf
rows = []
for record in tf.data.TFRecordDataset(sys.argv[1:]):
    example = tf.train.Example.FromString(record.numpy())
    row = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value)
        row[name] = [v.decode() if isinstance(v, bytes) else v for v in values]
    rows.append(row)
print(json.dumps(rows))
"""


@pytest.mark.slow
def test_tensorflow_reads_the_tfrecord_shards(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"id": 1, "name": "ä", "score": 0.25, "vip": True, "day": datetime.date(2024, 5, 6)},
        {"id": 2, "name": None, "score": 1.5, "vip": False, "day": None},
    ]
    files = run_write("tfrecord", tmp_path / "tf", rows, num_shards=2)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", TF_CHECK, *files],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=True,
    )
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed == [
        {"id": [1], "name": ["ä"], "score": [0.25], "vip": [1], "day": ["2024-05-06"]},
        {"id": [2], "score": [1.5], "vip": [0]},
    ]
