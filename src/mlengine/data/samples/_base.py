"""The sample-dataset record and the machinery every generator shares.

A generator makes its rows in fixed blocks of :data:`BLOCK_ROWS`. Block ``b`` depends only on the
seed, the total row count and ``b`` (never on how the caller batches the stream), so the same
``(seed, rows)`` always gives the same table, and a 50M-row load holds only a few blocks.
"""

from __future__ import annotations

import math
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import pyarrow as pa

from mlengine.errors import invalid_field

BLOCK_ROWS = 1 << 16
"""Rows per generated block; part of the determinism contract (changing it changes the data)."""

DEFAULT_BATCH_ROWS = 1 << 16
PREFETCH_WORKERS = min(4, os.cpu_count() or 1)

BlockGenerator = Callable[[int, int, int], pa.RecordBatch]
"""``(seed, total_rows, block_index) -> RecordBatch`` of :data:`BLOCK_ROWS` rows (or all rows of
a dataset smaller than one block). The stream keeps the first rows it needs from each block."""


@dataclass(frozen=True)
class SampleDataset:
    """One offline sample dataset: its schema and a deterministic, streaming generator.

    Attributes:
        name: The table name under the ``samples`` schema (``samples.<name>``).
        description: One line for listings.
        default_rows: Rows loaded when no row count is given.
        schema: The Arrow schema of every batch (and so of the table).
        max_rows: The most rows the dataset can give (``None``: unbounded).
    """

    name: str
    description: str
    default_rows: int
    schema: pa.Schema
    generate_block: BlockGenerator = field(repr=False, compare=False)
    max_rows: int | None = None

    def batches(
        self, rows: int | None = None, seed: int = 0, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> pa.RecordBatchReader:
        """Stream the dataset as Arrow record batches.

        Nothing is generated until the reader is read; memory stays bounded by a few blocks and
        one batch whatever ``rows`` is. The rows do not depend on ``batch_rows``.

        Args:
            rows: How many rows (``None``: :attr:`default_rows`).
            seed: A non-negative integer; the same seed and ``rows`` give the same rows.
            batch_rows: Rows per emitted batch (the last one may be shorter).

        Raises:
            InvalidArgument: ``rows`` is below 1 or above :attr:`max_rows`, ``seed`` is negative
                or ``batch_rows`` is below 1.
        """
        total = self.default_rows if rows is None else rows
        owner = f"sample dataset '{self.name}'"
        _check_int("rows", owner, total, 1, self.max_rows)
        _check_int("seed", owner, seed, 0, None)
        _check_int("batch_rows", owner, batch_rows, 1, None)
        return pa.RecordBatchReader.from_batches(self.schema, self._stream(total, seed, batch_rows))

    def _stream(self, total: int, seed: int, batch_rows: int) -> Iterator[pa.RecordBatch]:
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for index, block in enumerate(self._blocks(total, seed)):
            wanted = min(BLOCK_ROWS, total - index * BLOCK_ROWS)
            if block.num_rows < wanted:
                raise RuntimeError(f"{self.name} block {index} has {block.num_rows} rows")
            pending.append(block.slice(0, wanted))
            pending_rows += wanted
            while pending_rows >= batch_rows:
                batch, pending = _take(pending, batch_rows)
                pending_rows -= batch_rows
                yield batch
        if pending_rows:
            yield _take(pending, pending_rows)[0]

    def _blocks(self, total: int, seed: int) -> Iterator[pa.RecordBatch]:
        """The blocks in order, made a few at a time on worker threads (numpy releases the GIL),
        so generation overlaps with whoever consumes the stream; at most ``2 * workers`` blocks
        are held."""
        count = math.ceil(total / BLOCK_ROWS)
        workers = min(PREFETCH_WORKERS, count)
        if workers <= 1:
            for index in range(count):
                yield self.generate_block(seed, total, index)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix=f"mlengine-{self.name}") as pool:
            queued: deque[Future[pa.RecordBatch]] = deque()
            following = 0
            try:
                while following < count or queued:
                    while following < count and len(queued) < 2 * workers:
                        queued.append(pool.submit(self.generate_block, seed, total, following))
                        following += 1
                    yield queued.popleft().result()
            finally:
                for future in queued:
                    future.cancel()


def _check_int(name: str, owner: str, value: object, low: int, high: int | None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value <= high  # type: ignore[operator]
    if not ok:
        expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        raise invalid_field(name, owner, expected, value)


def _take(pending: list[pa.RecordBatch], rows: int) -> tuple[pa.RecordBatch, list[pa.RecordBatch]]:
    """The first ``rows`` rows of ``pending`` as one batch, and what is left."""
    if pending[0].num_rows == rows:
        return pending[0], pending[1:]
    pieces: list[pa.RecordBatch] = []
    left = rows
    rest = list(pending)
    while left:
        head = rest.pop(0)
        if head.num_rows > left:
            pieces.append(head.slice(0, left))
            rest.insert(0, head.slice(left))
            left = 0
        else:
            pieces.append(head)
            left -= head.num_rows
    if len(pieces) == 1:
        return pieces[0], rest
    table = pa.Table.from_batches(pieces).combine_chunks()
    return table.to_batches()[0], rest


# --- random numbers -------------------------------------------------------------------------


def block_rng(seed: int, dataset: str, index: int) -> np.random.Generator:
    """The random generator of block ``index`` of ``dataset`` under ``seed``."""
    tag = zlib.crc32(dataset.encode())
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, tag, index])))


_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective, well-mixed hash of uint64 values (wraps silently)."""
    z = x.astype(np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def key(seed: int, dataset: str, purpose: str) -> int:
    """A 64-bit key for hash-derived attributes: one per seed, dataset and purpose."""
    tag = zlib.crc32(f"{dataset}/{purpose}".encode())
    return int(np.random.SeedSequence([seed, tag]).generate_state(1, np.uint64)[0])


def hashed_uniforms(ids: np.ndarray, key_: int, count: int) -> list[np.ndarray]:
    """``count`` independent uniforms in [0, 1) per id, each a pure function of (key, id).

    Each 64-bit hash gives three uniforms of 21 bits (steps of 1/2,097,152): plenty for
    choosing attributes, at a third of the hashing.
    """
    state = mix64(ids.astype(np.uint64) ^ np.uint64(key_))
    out: list[np.ndarray] = []
    while len(out) < count:
        state = mix64(state + _GOLDEN)
        for shift in (43, 22, 1):
            bits = (state >> np.uint64(shift)) & np.uint64(_MASK21)
            out.append(bits.astype(np.float64) * (1.0 / (1 << 21)))
    return out[:count]


_MASK21 = (1 << 21) - 1


def hashed_int(seed_key: int, modulus: int) -> int:
    """A deterministic integer in [0, modulus) from a key."""
    return int(mix64(np.array([seed_key & _MASK64], dtype=np.uint64))[0]) % modulus


def coprime_multiplier(seed_key: int, modulus: int) -> int:
    """A multiplier coprime with ``modulus``, so ``(a * i + c) % modulus`` permutes ``range``."""
    if modulus <= 2:
        return 1
    a = hashed_int(seed_key, modulus - 1) + 1
    while math.gcd(a, modulus) != 1:
        a = a % (modulus - 1) + 1
    return a


# --- sampling helpers -----------------------------------------------------------------------


def cumulative(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Normalised cumulative weights whose last value is exactly 1."""
    cum = np.cumsum(np.asarray(weights, dtype=np.float64))
    cum /= cum[-1]
    cum[-1] = 1.0
    return cum


class Categorical:
    """Draws category indices ``0..k-1`` with fixed weights from uniforms in [0, 1).

    A lookup table on a fine grid of the uniform finds the category in O(1) (a binary search per
    value costs several times more), then exact correction steps move the few values that fall
    in a grid cell holding a category boundary.
    """

    def __init__(self, weights: Sequence[float] | np.ndarray) -> None:
        self.cum = cumulative(weights)
        self.resolution = 1 << max(12, int(len(self.cum) * 16 - 1).bit_length())
        grid = np.arange(self.resolution, dtype=np.float64) / self.resolution
        self.table = np.searchsorted(self.cum, grid, side="right").astype(np.int64)

    def draw(self, uniform: np.ndarray) -> np.ndarray:
        """Category indices for ``uniform`` (same shape)."""
        index = self.table[(uniform * self.resolution).astype(np.intp)]
        while True:
            over = uniform >= self.cum[index]
            if not over.any():
                return index
            index = index + over


class ConditionalCategorical:
    """Like :class:`Categorical`, with one row of weights per condition (a 2-D array)."""

    def __init__(self, weights: np.ndarray) -> None:
        rows = [Categorical(row) for row in np.asarray(weights, dtype=np.float64)]
        self.resolution = max(row.resolution for row in rows)
        width = len(rows[0].cum)
        grid = np.arange(self.resolution, dtype=np.float64) / self.resolution
        self.cum = np.concatenate([row.cum for row in rows])
        self.table = np.concatenate(
            [np.searchsorted(row.cum, grid, side="right") + i * width for i, row in enumerate(rows)]
        ).astype(np.int64)
        self.width = width

    def draw(self, condition: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """Category indices for each row's condition index and uniform."""
        flat = self.table[condition * self.resolution + (uniform * self.resolution).astype(np.intp)]
        while True:
            over = uniform >= self.cum[flat]
            if not over.any():
                return flat - condition * self.width
            flat = flat + over


class SkewedRanks:
    """Draws ranks ``0..n-1`` with a popularity that follows a fixed curve over rank quantiles.

    The curve is tabulated on a fixed grid of quantiles, so drawing costs the same and holds the
    same memory whatever ``n`` is (no per-rank arrays).
    """

    GRID = 4096

    def __init__(self, weight_of_quantile: Callable[[np.ndarray], np.ndarray]) -> None:
        mids = (np.arange(self.GRID) + 0.5) / self.GRID
        self.cells = Categorical(weight_of_quantile(mids))
        self.low = np.concatenate([[0.0], self.cells.cum[:-1]])

    def draw(self, uniform: np.ndarray, n: int) -> np.ndarray:
        """Ranks for uniforms in [0, 1); rank 0 is the least popular, ``n - 1`` the most."""
        cell = self.cells.draw(uniform)
        low = self.low[cell]
        within = (uniform - low) / (self.cells.cum[cell] - low)
        quantile = (cell + np.clip(within, 0.0, 1.0 - 1e-9)) / self.GRID
        return np.minimum((quantile * n).astype(np.int64), n - 1)


def normal_quantile(q: np.ndarray) -> np.ndarray:
    """The standard normal quantile function, elementwise (used on small fixed grids only)."""
    dist = NormalDist()
    return np.array([dist.inv_cdf(float(v)) for v in q])


# --- Arrow helpers --------------------------------------------------------------------------


def strings(indices: np.ndarray, dictionary: pa.Array, mask: np.ndarray | None = None) -> pa.Array:
    """A plain string array from category indices into ``dictionary`` (nulls where ``mask``)."""
    idx = pa.array(indices.astype(np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(idx, dictionary).cast(pa.string())


def ints(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """An int64 array (nulls where ``mask``)."""
    return pa.array(values.astype(np.int64, copy=False), type=pa.int64(), mask=mask)


def floats(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """A float64 array (nulls where ``mask``)."""
    return pa.array(values.astype(np.float64, copy=False), type=pa.float64(), mask=mask)


def bools(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """A boolean array (nulls where ``mask``)."""
    return pa.array(values.astype(np.bool_, copy=False), type=pa.bool_(), mask=mask)
