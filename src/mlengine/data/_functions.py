"""BigQuery functions the tutorials use, registered on every warehouse connection.

- ``FARM_FINGERPRINT(STRING | BYTES) -> INT64``: pyfarmhash's ``fingerprint64`` reinterpreted
  as a signed 64-bit integer, which is bit-identical to BigQuery. Vectorised: each distinct
  value of a batch is hashed once.
- ``APPROX_QUANTILES(x, n) -> ARRAY``: the n+1 boundaries (min, ..., max), computed exactly
  with ``quantile_disc`` (BigQuery's own algorithm is approximate and undocumented).
- ``RAND()``: DuckDB's ``random()``.
- the type names ``FLOAT64`` and ``BYTES`` (DuckDB knows ``INT64``, ``STRING``, ``BOOL`` and
  ``NUMERIC`` already), so ``CAST(x AS FLOAT64)`` parses.
- ``MOD`` and ``ABS`` need nothing: DuckDB's ``MOD`` takes the sign of X as BigQuery's does, and
  ``ABS(-9223372036854775808)`` is an overflow error in both.
"""

from __future__ import annotations

import contextlib
from typing import Any

import duckdb
import farmhash
import numpy as np
import pyarrow as pa

__all__ = ["farm_fingerprint", "farm_fingerprint_array", "register_bigquery_functions"]

_INT64_WRAP = 1 << 64
_INT64_MAX = (1 << 63) - 1

# Temporary macros and types live in the connection's temp catalog, so they also work on
# read-only connections and never end up stored in the warehouse file.
_DEFINITIONS = (
    "CREATE OR REPLACE TEMP TYPE float64 AS DOUBLE",
    "CREATE OR REPLACE TEMP TYPE bytes AS BLOB",
    "CREATE OR REPLACE TEMP MACRO rand() AS random()",
    "CREATE OR REPLACE TEMP MACRO approx_quantiles(x, n) AS "
    "quantile_disc(x, list_transform(range(n + 1), lambda i: i / n))",
)


def _signed(unsigned: int) -> int:
    return unsigned - _INT64_WRAP if unsigned > _INT64_MAX else unsigned


def _bigquery_string(value: int | float | bool) -> str:
    """``CAST(value AS STRING)`` as BigQuery writes booleans, integers and (mostly) floats."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def farm_fingerprint(value: str | bytes | int | float | bool | None) -> int | None:
    """BigQuery's ``FARM_FINGERPRINT`` of one value.

    A ``str`` hashes its UTF-8 bytes and ``bytes`` hash as they are, exactly as BigQuery hashes
    STRING and BYTES. BigQuery takes only those two types; for convenience a ``bool``, ``int``
    or ``float`` is first written as BigQuery's ``CAST(x AS STRING)`` writes it (``true``,
    ``42``, ``1.5``); casting is otherwise the caller's business.

    Args:
        value: the value to hash; None gives None (NULL in, NULL out).

    Returns:
        The signed 64-bit fingerprint, or None.

    Raises:
        TypeError: `value` is of another type.
    """
    if value is None:
        return None
    if isinstance(value, bytes | str):
        return _signed(farmhash.fingerprint64(value))
    if isinstance(value, bytearray | memoryview):
        return _signed(farmhash.fingerprint64(bytes(value)))
    if isinstance(value, bool | int | float):
        return _signed(farmhash.fingerprint64(_bigquery_string(value)))
    raise TypeError(
        f"farm_fingerprint takes str, bytes, int, float, bool or None. Got {type(value).__name__}."
    )


def _hash_distinct(values: pa.Array) -> pa.Array:
    """Fingerprints of an array of distinct, non-null strings or binaries."""
    hashes = np.fromiter(
        (farmhash.fingerprint64(value) for value in values.to_pylist()),
        dtype=np.uint64,
        count=len(values),
    )
    return pa.array(hashes.view(np.int64), type=pa.int64())


def _is_text_or_bytes(data_type: pa.DataType) -> bool:
    checks = (
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_binary,
        pa.types.is_large_binary,
        pa.types.is_fixed_size_binary,
        getattr(pa.types, "is_string_view", None),
        getattr(pa.types, "is_binary_view", None),
    )
    return any(check(data_type) for check in checks if check is not None)


def _is_view(data_type: pa.DataType) -> bool:
    return str(data_type) in ("string_view", "binary_view")


def farm_fingerprint_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``FARM_FINGERPRINT`` of every element of a string or binary Arrow array.

    Each distinct value is hashed once (dictionary-encode, hash the dictionary, take), so the
    cost follows the number of distinct keys, not of rows. Nulls stay null.

    Args:
        values: a string, large_string, string_view, binary-like or dictionary-of-those array
            (or chunked array).

    Returns:
        An ``int64`` array of the same length.

    Raises:
        TypeError: the array holds another type (cast it to string first, as BigQuery requires).
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], values.type)
    if not pa.types.is_dictionary(values.type):
        if not _is_text_or_bytes(values.type):
            raise TypeError(
                "FARM_FINGERPRINT takes STRING or BYTES; got "
                f"{values.type}. Cast it first: FARM_FINGERPRINT(CAST(x AS STRING))."
            )
        if len(values) == 0:
            return pa.array([], type=pa.int64())
        if _is_view(values.type):
            values = values.cast(
                pa.large_binary() if "binary" in str(values.type) else pa.large_string()
            )
        values = values.dictionary_encode()
    dictionary = values.dictionary
    if not _is_text_or_bytes(dictionary.type):
        raise TypeError(f"FARM_FINGERPRINT takes STRING or BYTES; got {dictionary.type}.")
    hashes = _hash_distinct(dictionary)
    return hashes.take(values.indices)


def _farm_fingerprint_udf(values: Any) -> pa.Array:
    return farm_fingerprint_array(values)


def register_bigquery_functions(connection: Any) -> None:
    """Register FARM_FINGERPRINT, APPROX_QUANTILES, RAND, FLOAT64 and BYTES on a connection.

    Idempotent: a function already registered on `connection` is replaced.
    """
    with contextlib.suppress(duckdb.InvalidInputException):  # not registered yet
        connection.remove_function("farm_fingerprint")
    # parameters=None takes any type; the UDF itself rejects all but STRING and BYTES.
    # Python functions live in the database instance, which connections to one file opened in
    # one process share: a second connection finds the function there already.
    with contextlib.suppress(duckdb.CatalogException):
        connection.create_function(
            "farm_fingerprint",
            _farm_fingerprint_udf,
            None,
            duckdb.sqltypes.BIGINT,
            type="arrow",
        )
    for statement in _DEFINITIONS:
        connection.execute(statement)
