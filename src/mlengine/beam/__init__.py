"""Apache Beam glue for mlengine: the Dataflow role of the Google Cloud tutorials.

Read from and write to the warehouse as ``beam.io.ReadFromBigQuery``/``WriteToBigQuery`` do,
split rows by hash exactly as the SQL idiom ``ABS(MOD(FARM_FINGERPRINT(...), 10)) < 8`` does,
label by exact percentiles that agree with SQL's ``PERCENTILE_CONT``, and write training
shards as Parquet, CSV, TFRecord (``tf.train.Example``) or JSON lines::

    import apache_beam as beam
    from mlengine.beam import HashSplit, ReadFromWarehouse, WriteToParquetShards

    with beam.Pipeline() as pipeline:
        rows = pipeline | ReadFromWarehouse("SELECT * FROM samples.blackfriday")
        splits = rows | HashSplit("User_ID")
        splits.train | "Train" >> WriteToParquetShards("out/train")
        splits.eval | "Eval" >> WriteToParquetShards("out/eval")

``mlengine preprocess pipeline.py -- ARGS`` runs such a file (`run_pipeline`). Importing this
package imports Apache Beam (``pip install 'mlengine[beam]'``) and makes Beam's DirectRunner
skip its Prism download, so that it runs offline on the pure-Python runner. See docs/beam.md.
"""

from __future__ import annotations

from mlengine.beam import _compat

_compat.import_beam()
_compat.install_offline_direct_runner()

from mlengine.beam._aggregate import AGGREGATES, AggregatePerKey  # noqa: E402
from mlengine.beam._example import encode_example  # noqa: E402
from mlengine.beam._launch import (  # noqa: E402
    RUNNERS,
    check_runner_args,
    pipeline_argv,
    run_pipeline,
)
from mlengine.beam._shards import (  # noqa: E402
    WriteToCsvShards,
    WriteToJsonlShards,
    WriteToParquetShards,
    WriteToTFRecordShards,
)
from mlengine.beam._split import HashSplit, hash_bucket  # noqa: E402
from mlengine.beam._stats import PercentileCont, percentile_cont  # noqa: E402
from mlengine.beam._warehouse import ReadFromWarehouse, WriteToWarehouse  # noqa: E402

__all__ = [
    "AGGREGATES",
    "RUNNERS",
    "AggregatePerKey",
    "HashSplit",
    "PercentileCont",
    "ReadFromWarehouse",
    "WriteToCsvShards",
    "WriteToJsonlShards",
    "WriteToParquetShards",
    "WriteToTFRecordShards",
    "WriteToWarehouse",
    "check_runner_args",
    "encode_example",
    "hash_bucket",
    "percentile_cont",
    "pipeline_argv",
    "run_pipeline",
]
