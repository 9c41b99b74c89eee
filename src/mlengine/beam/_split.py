"""Repeatable hash splits with BigQuery's semantics.

``hash_bucket(x, 10) < 8`` puts a row in the same split as the SQL idiom
``ABS(MOD(FARM_FINGERPRINT(CAST(x AS STRING)), 10)) < 8`` does, on BigQuery and on the
mlengine warehouse:

* ``FARM_FINGERPRINT`` is FarmHash ``Fingerprint64`` as a signed INT64 (`mlengine.data`).
* ``CAST(x AS STRING)``: a ``str`` is hashed as its UTF-8 bytes, ``bytes`` as they are, an
  ``int`` as its decimal digits, a ``bool`` as ``true``/``false`` (BigQuery's spelling, not
  Python's ``True``) and a ``float`` as BigQuery prints it (``3`` for 3.0, ``0.1``, ``inf``,
  ``nan``). Anything else (dates, decimals) is the caller's to format as BigQuery would.
* ``MOD`` truncates and takes the sign of X (Python's ``%`` floors), then ``ABS``: together
  ``abs(fingerprint) % buckets``, which is exact on Python integers even for INT64_MIN.
* A NULL key hashes to NULL, and ``NULL < 8`` is not true: such rows are in neither split,
  as in SQL. `HashSplit` drops them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apache_beam as beam

from mlengine.errors import invalid_field

__all__ = ["HashSplit", "hash_bucket"]

TRAIN = "train"
EVAL = "eval"


def _fingerprint(value: Any) -> int | None:
    from mlengine.data import farm_fingerprint

    return farm_fingerprint(value)


def hash_bucket(value: Any, buckets: int = 10) -> int | None:
    """``ABS(MOD(FARM_FINGERPRINT(CAST(value AS STRING)), buckets))``, as BigQuery computes it.

    Args:
        value: a str, bytes, int, bool or float key (module docstring for how each is written
            as a STRING); None gives None.
        buckets: the number of buckets, >= 1.

    Returns:
        The bucket in ``0 .. buckets - 1``, or None for a None key.

    Raises:
        InvalidArgument: `buckets` < 1.
        TypeError: `value` is of another type.
    """
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise invalid_field("buckets", "hash_bucket", "an integer >= 1", buckets)
    fingerprint = _fingerprint(value)
    if fingerprint is None:
        return None
    return abs(fingerprint) % buckets


def _key_function(key: str | Callable[[Any], Any]) -> Callable[[Any], Any]:
    if isinstance(key, str):
        column = key
        return lambda row: row[column]
    if callable(key):
        return key
    raise invalid_field("key", "HashSplit", "a column name or a function of the row", key)


class _SplitFn(beam.DoFn):
    def __init__(self, key: str | Callable[[Any], Any], train_buckets: int, buckets: int):
        self._key = key
        self._train_buckets = train_buckets
        self._buckets = buckets

    def setup(self) -> None:
        self._key_of = _key_function(self._key)

    def process(self, row: Any) -> Any:
        bucket = hash_bucket(self._key_of(row), self._buckets)
        if bucket is None:
            return
        if bucket < self._train_buckets:
            yield row
        else:
            yield beam.pvalue.TaggedOutput(EVAL, row)


class HashSplit(beam.PTransform):
    """Split a PCollection into ``train`` and ``eval`` by a hash of each element's key.

    ``train`` holds the elements with ``hash_bucket(key, buckets) < train_buckets``: the same
    membership as ``WHERE ABS(MOD(FARM_FINGERPRINT(CAST(key AS STRING)), buckets)) <
    train_buckets`` in SQL, so a split made in Beam and one made in SQL agree row for row, and
    a key always lands on the same side. Elements whose key is None are in neither output (as
    a NULL key is in neither SQL split).

    Example::

        splits = users | HashSplit("User_ID")            # 80/20
        splits.train | "Train" >> WriteToParquetShards("out/train")
        splits.eval | "Eval" >> WriteToParquetShards("out/eval")
        train, eval_ = users | HashSplit(lambda row: row["id"], 9, 10)   # 90/10, unpacked

    Args:
        key: a column name of dict elements, or a function from an element to its key.
        train_buckets: how many of the `buckets` go to ``train`` (0 .. buckets).
        buckets: the number of hash buckets, >= 1.

    Raises:
        InvalidArgument: bad `key`, `train_buckets` or `buckets` (when the transform is built).
    """

    def __init__(
        self, key: str | Callable[[Any], Any], train_buckets: int = 8, buckets: int = 10
    ) -> None:
        super().__init__()
        self.key = key
        self.train_buckets = train_buckets
        self.buckets = buckets

    def expand(self, pcoll: Any) -> Any:
        _key_function(self.key)
        if isinstance(self.buckets, bool) or not isinstance(self.buckets, int) or self.buckets < 1:
            raise invalid_field("buckets", "HashSplit", "an integer >= 1", self.buckets)
        if (
            isinstance(self.train_buckets, bool)
            or not isinstance(self.train_buckets, int)
            or not 0 <= self.train_buckets <= self.buckets
        ):
            raise invalid_field(
                "train_buckets",
                "HashSplit",
                f"an integer from 0 to {self.buckets}",
                self.train_buckets,
            )
        split = beam.ParDo(_SplitFn(self.key, self.train_buckets, self.buckets))
        return pcoll | split.with_outputs(EVAL, main=TRAIN)
