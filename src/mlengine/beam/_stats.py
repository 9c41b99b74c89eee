"""Exact percentiles that agree with SQL's ``PERCENTILE_CONT``.

BigQuery's ``APPROX_QUANTILES``, DuckDB's ``approx_quantile`` and Beam's
``ApproximateQuantiles`` are approximations that disagree with each other on a few labels in
50k (DESIGN §7). A label such as "above the 90th percentile" must not depend on the engine, so
mlengine uses the exact, interpolated percentile everywhere: ``PERCENTILE_CONT(x, 0.9) OVER ()``
on BigQuery, ``quantile_cont(x, 0.9)`` on DuckDB, `percentile_cont` / `PercentileCont` here.

The definition (SQL's ``PERCENTILE_CONT``, numpy's default ``linear`` method): sort the n
non-null values v[0] <= ... <= v[n-1]; let r = fraction * (n - 1), lo = floor(r), hi = ceil(r)
and d = r - lo; the percentile is v[lo] * (1 - d) + v[hi] * d. It is computed in double
precision bit for bit as DuckDB computes it (its build fuses the last multiply-add), so that
``total > percentile`` gives the same answer in SQL and in Beam even at the last ulp.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import apache_beam as beam

from mlengine.errors import invalid_field

__all__ = ["PercentileCont", "percentile_cont"]


def _check_fraction(fraction: float, owner: str) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise invalid_field("fraction", owner, "a number from 0 to 1", fraction)
    if not 0.0 <= float(fraction) <= 1.0:
        raise invalid_field("fraction", owner, "a number from 0 to 1", fraction)
    return float(fraction)


def _fused_multiply_add(x: float, y: float, z: float) -> float:
    """x * y + z rounded once, as a hardware FMA does (math.fma arrives in Python 3.13)."""
    return float(Fraction(x) * Fraction(y) + Fraction(z))


def _interpolate(lo: float, hi: float, d: float) -> float:
    return _fused_multiply_add(lo, 1.0 - d, hi * d)


def percentile_cont(values: Iterable[float | int | None], fraction: float) -> float | None:
    """SQL's ``PERCENTILE_CONT(x, fraction)`` over `values` (module docstring).

    Args:
        values: numbers; None values are ignored, as SQL ignores NULLs.
        fraction: the percentile as a fraction, 0 to 1 (0.9 for the 90th).

    Returns:
        The interpolated percentile as a float, or None when there are no values.

    Raises:
        InvalidArgument: `fraction` is not a number from 0 to 1.
    """
    fraction = _check_fraction(fraction, "percentile_cont")
    ordered = sorted(float(value) for value in values if value is not None)
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    lo = math.floor(position)
    hi = math.ceil(position)
    if lo == hi:
        return ordered[lo]
    return _interpolate(ordered[lo], ordered[hi], position - lo)


class PercentileCont(beam.CombineFn):
    """A CombineFn for the exact ``PERCENTILE_CONT`` (module docstring).

    Use it as ``values | beam.CombineGlobally(PercentileCont(0.9))`` (the result is None for an
    empty input) or per key with ``beam.CombinePerKey``. It is exact, so it keeps every value of
    a group in memory: fine for per-user totals, not for billions of raw rows.

    Raises:
        InvalidArgument: `fraction` is not a number from 0 to 1.
    """

    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = _check_fraction(fraction, "PercentileCont")

    def create_accumulator(self) -> list[float]:
        return []

    def add_input(self, accumulator: list[float], value: Any) -> list[float]:
        if value is not None:
            accumulator.append(value)
        return accumulator

    def add_inputs(self, accumulator: list[float], values: Iterable[Any]) -> list[float]:
        accumulator.extend(value for value in values if value is not None)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list[float]]) -> list[float]:
        merged: list[float] = []
        for accumulator in accumulators:
            merged.extend(accumulator)
        return merged

    def extract_output(self, accumulator: list[float]) -> float | None:
        return percentile_cont(accumulator, self.fraction)
