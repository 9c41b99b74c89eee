"""``samples.iris``: Fisher's 150 iris flowers, as scikit-learn ships them (real data, offline).

All 150 rows load in the original order (the seed does not matter then). Fewer rows are a
seeded random sample without replacement, kept in the original order. More than 150 is refused:
these are real measurements, and repeating or inventing flowers would mislead.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

from mlengine.data.samples._base import SampleDataset, block_rng, floats, ints, strings

NAME = "iris"
ROWS = 150

SCHEMA = pa.schema(
    [
        pa.field("sepal_length", pa.float64(), nullable=False),
        pa.field("sepal_width", pa.float64(), nullable=False),
        pa.field("petal_length", pa.float64(), nullable=False),
        pa.field("petal_width", pa.float64(), nullable=False),
        pa.field("species", pa.string(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
    ]
)


@functools.cache
def _iris() -> tuple[np.ndarray, np.ndarray, pa.Array]:
    from sklearn.datasets import load_iris  # imported on use: scikit-learn is slow to import

    bunch = load_iris()
    return bunch.data, bunch.target, pa.array([str(name) for name in bunch.target_names])


def generate_block(seed: int, total_rows: int, index: int) -> pa.RecordBatch:
    """The (only) block of the iris sample: ``total_rows`` of the 150 flowers."""
    del index  # 150 rows fit in one block
    data, target, names = _iris()
    if total_rows >= ROWS:
        chosen = np.arange(ROWS)
    else:
        chosen = np.sort(block_rng(seed, NAME, 0).permutation(ROWS)[:total_rows])
    features = data[chosen]
    columns = [floats(features[:, column]) for column in range(4)]
    columns += [strings(target[chosen], names), ints(target[chosen])]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


DATASET = SampleDataset(
    name=NAME,
    description="Fisher's iris flowers (150 real rows, from scikit-learn)",
    default_rows=ROWS,
    schema=SCHEMA,
    generate_block=generate_block,
    max_rows=ROWS,
)
