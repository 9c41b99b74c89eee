"""``tf.train.Example`` records from dict rows, without importing TensorFlow.

The Example message is small and stable (tensorflow/core/example/{example,feature}.proto)::

    Example    { Features features = 1; }
    Features   { map<string, Feature> feature = 1; }
    Feature    { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                              Int64List int64_list = 3; } }
    BytesList  { repeated bytes value = 1; }
    FloatList  { repeated float value = 1 [packed = true]; }
    Int64List  { repeated int64 value = 1 [packed = true]; }

so it is written here directly in the protobuf wire format. Importing TensorFlow to do it
would cost seconds and hundreds of megabytes in every Beam worker; the tests check that
``tf.train.Example.FromString`` reads these bytes back to the same values.

Values map to features as ``tf.train.Example`` users expect: ``bool`` and ``int`` to
Int64List, ``float`` and ``Decimal`` to FloatList (32-bit, as TensorFlow stores them), ``str``
(UTF-8), ``bytes`` and dates/times (ISO 8601) to BytesList, a list or tuple of those to a list
of that kind (ints widen to floats when floats are present), and None to no feature at all
(a missing value, as ``tf.io.parse_example`` understands it). An empty list is an empty
Int64List.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["encode_example"]

_BYTES, _FLOAT, _INT64 = 1, 2, 3
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 is written as its two's complement, ten bytes long
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _kind(value: Any) -> int:
    if isinstance(value, bool | int):
        return _INT64
    if isinstance(value, float | decimal.Decimal):
        return _FLOAT
    if isinstance(value, str | bytes | bytearray | datetime.date | datetime.time):
        return _BYTES
    module = type(value).__module__
    if module == "numpy":  # numpy scalars, without importing numpy
        name = type(value).__name__
        if name.startswith(("int", "uint", "bool")):
            return _INT64
        if name.startswith("float"):
            return _FLOAT
        if name.startswith(("str", "bytes")):
            return _BYTES
    raise TypeError(f"a tf.train.Example feature cannot hold a {type(value).__name__}")


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat().encode()
    return str(value).encode()


def _as_int64(value: Any) -> int:
    number = int(value)
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise ValueError(f"{number} does not fit an int64 feature")
    return number


def _feature(values: list[Any]) -> bytes:
    kinds = {_kind(value) for value in values}
    if not values or kinds == {_INT64}:
        packed = b"".join(_varint(_as_int64(value)) for value in values)
        return _field(_INT64, _field(1, packed) if packed else b"")
    if kinds <= {_INT64, _FLOAT}:
        packed = struct.pack(f"<{len(values)}f", *(float(value) for value in values))
        return _field(_FLOAT, _field(1, packed))
    if kinds == {_BYTES}:
        return _field(_BYTES, b"".join(_field(1, _as_bytes(value)) for value in values))
    raise TypeError("a tf.train.Example feature holds numbers or strings, not both")


def _values(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [item for item in value if item is not None]
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and type(value).__name__ == "ndarray":
        listed = tolist()
        return listed if isinstance(listed, list) else [listed]
    return [value]


def encode_example(row: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> bytes:
    """The serialized ``tf.train.Example`` of one row (module docstring for the types).

    Args:
        row: a mapping (or pairs) of feature name to value.

    Returns:
        The bytes ``tf.train.Example(...).SerializeToString()`` would parse back to the row.

    Raises:
        TypeError: a value cannot be a feature (a dict, a mixed list of numbers and strings).
        ValueError: an integer does not fit int64.
    """
    items = row.items() if isinstance(row, Mapping) else row
    entries = []
    for name, value in items:
        if value is None:
            continue
        try:
            feature = _feature(_values(value))
        except (TypeError, ValueError) as error:
            raise type(error)(f"feature {name!r}: {error}") from error
        entries.append(_field(1, _field(1, str(name).encode()) + _field(2, feature)))
    return _field(1, b"".join(entries)) if entries else b""
