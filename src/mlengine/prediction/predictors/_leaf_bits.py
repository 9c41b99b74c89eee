"""A forest of small trees evaluated as bit vectors: every tree's leaf for a batch of rows in a
few whole-array numpy operations, instead of one ``tree_.apply`` walk per tree.

This is QuickScorer (Lucchese et al., SIGIR 2015) laid out for numpy. Number each tree's leaves
left to right, one bit each. A split node whose test fails for a row (``x > threshold``: the row
goes right) rules out every leaf of its left subtree, so it carries a mask with those leaves'
bits cleared. AND-ing together the masks of all the nodes a row fails, tree by tree, leaves the
row's exit leaf as the lowest bit still set: a leaf left of it shares an ancestor with it where
the row went right, and that ancestor's mask cleared it; none of the exit leaf's own ancestors
that the row fails has it on its left.

Which nodes a row fails depends, feature by feature, only on where the row's value falls among
that feature's thresholds: with the thresholds of all the trees' nodes on feature ``f`` sorted,
a value above the first ``k`` of them fails exactly those nodes. So each feature keeps a table
with one row per ``k`` holding, for every tree, the AND of the masks of its nodes among the first
``k`` thresholds; a batch costs one ``searchsorted`` per feature, one gather of table rows per
feature AND-ed together, and one lookup of the lowest set bit. The comparisons are the trees'
own (the float32 input, as a float64, against the float64 threshold, ``<=`` going left), so the
leaves are the ones ``tree_.apply`` finds.

It pays while the trees are small and the features few: each tree's leaves must fit one machine
word (at most 64), the tables grow with nodes x trees (capped at `TABLE_BYTES`), and a batch
costs one gather per feature used where ``tree_.apply`` costs one step per level. A NaN has a
row of its own in each table: the masks of the nodes that send missing values right.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["TABLE_BYTES", "LeafBits", "leaf_bits", "missing_go_to_left"]

TABLE_BYTES = 16 << 20
"""The most bytes of per-feature tables a forest's bit vectors may take."""

_WORDS = ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64))

_CALL_US = 10.0
_FEATURE_CALL_US = 3.0
_SEARCH_NS = 30.0
_TREE_ROW_NS = 1.5
_FEATURE_TREE_ROW_BYTE_NS = 0.25
"""What a batch costs (measured, numpy 2): per call and per feature used; per row and feature
(its search among the thresholds); per tree and row, and per byte of word, tree, row and
feature (the gathers and ANDs)."""

_FLOAT_LAYOUT: dict[int, tuple[Any, Any, Any, int, int, int]] = {
    32: (np.int32, np.float32, np.uint32, 23, 0xFF, 127),
    64: (np.int64, np.float64, np.uint64, 52, 0x7FF, 1023),
}
"""By word width: the signed word, the float of that width, the unsigned word, where the
float's exponent field starts, its mask and its bias."""

# the lowest set bit of every 16-bit word (0 for 0, which never occurs: a row always exits)
_LOWEST_BIT_16 = np.zeros(1 << 16, dtype=np.uint8)
for _bit in range(15, -1, -1):
    _LOWEST_BIT_16[1 << _bit :: 1 << (_bit + 1)] = _bit
del _bit


class LeafBits:
    """Bit-vector tables of one forest's trees.

    ``value_rows(array)`` gives, for each tree and row, the row of `values` holding the value of
    the leaf ``tree_.apply`` would reach: tree ``t``'s leaves sit at rows ``t * width`` onwards,
    left to right.
    """

    def __init__(
        self,
        trees: Sequence[Any],
        leaf_values: Sequence[np.ndarray],
        width: int,
        word: type[np.unsignedinteger[Any]],
    ) -> None:
        self.width = width
        self._word = word
        outputs = leaf_values[0].shape[1]
        self.values = np.zeros((len(trees) * width, outputs), dtype=np.float64)
        self._tree_start = (np.arange(len(trees), dtype=np.intp) * width)[:, None]
        by_feature: dict[int, list[tuple[float, int, int, bool]]] = {}
        for index, (tree, table) in enumerate(zip(trees, leaf_values, strict=True)):
            left = tree.children_left.tolist()
            right = tree.children_right.tolist()
            leaves, first, count = _number_leaves(left, right)
            self.values[index * width : index * width + len(leaves)] = table[leaves]
            features = tree.feature.tolist()
            thresholds = tree.threshold.tolist()
            nan_left = missing_go_to_left(tree)
            full = (1 << width) - 1
            for node, child in enumerate(left):
                if child == -1:
                    continue
                mask = full & ~(((1 << count[child]) - 1) << first[child])
                node_entry = (thresholds[node], index, mask, bool(nan_left[node]))
                by_feature.setdefault(features[node], []).append(node_entry)
        self.features = sorted(by_feature)
        self._thresholds: list[np.ndarray] = []
        self._tables: list[np.ndarray] = []
        for feature in self.features:
            thresholds, table = _prefix_masks(by_feature[feature], len(trees), width, word)
            self._thresholds.append(thresholds)
            self._tables.append(table)
        self.table_bytes = sum(table.nbytes for table in self._tables)

    def value_rows(self, array: np.ndarray) -> np.ndarray:
        """Rows of `values` for each tree (axis 0) and row of the float32 `array` (axis 1)."""
        rows = array.shape[0]
        trees = self._tree_start.shape[0]
        if not self.features:  # every tree is a lone leaf
            return np.repeat(self._tree_start, rows, axis=1)
        columns = np.ascontiguousarray(array.T, dtype=np.float64)
        missing = np.isnan(columns)
        some_missing = bool(missing.any())
        # two word buffers for the whole call: fresh arrays per step cost page faults
        exits = np.empty((rows, trees), dtype=self._word)
        gathered = np.empty((rows, trees), dtype=self._word)
        for number, (feature, thresholds, table) in enumerate(
            zip(self.features, self._thresholds, self._tables, strict=True)
        ):
            above = np.searchsorted(thresholds, columns[feature], side="left")
            if some_missing:
                above[missing[feature]] = len(thresholds) + 1  # the table's row for NaN
            if number == 0:
                table.take(above, axis=0, out=exits, mode="clip")
            else:
                table.take(above, axis=0, out=gathered, mode="clip")
                np.bitwise_and(exits, gathered, out=exits)
        by_tree = gathered.reshape(trees, rows)
        np.copyto(by_tree, exits.T)
        return self._lowest_bits(by_tree, exits.reshape(trees, rows))

    def _lowest_bits(self, words: np.ndarray, scratch: np.ndarray) -> np.ndarray:
        """The rows of `values` that the lowest set bits of the (trees, rows) `words` number;
        `words` and `scratch` are overwritten."""
        if self.width <= 16:
            return np.add(_LOWEST_BIT_16.take(words), self._tree_start, dtype=np.intp)
        np.negative(words, out=scratch)  # two's complement: -w keeps w's lowest bit, flips above
        np.bitwise_and(words, scratch, out=scratch)
        # a power of two converts to a float exactly; its exponent field is the bit's number
        # (the top bit, negative as a signed word, only sets the sign bit beside it)
        signed, floating, unsigned, shift, exponent, bias = _FLOAT_LAYOUT[self.width]
        np.copyto(words.view(floating), scratch.view(signed), casting="unsafe")
        exponents = words.view(unsigned)
        np.right_shift(exponents, unsigned(shift), out=exponents)
        np.bitwise_and(exponents, unsigned(exponent), out=exponents)
        return np.add(exponents, self._tree_start - bias, dtype=np.intp)

    def cost_us(self, rows: int, trees: int) -> float:
        """The estimated cost of `value_rows` for `rows` rows, in microseconds."""
        features = len(self.features)
        per_tree_row = _TREE_ROW_NS + features * self.width / 8 * _FEATURE_TREE_ROW_BYTE_NS
        per_row = features * _SEARCH_NS + trees * per_tree_row
        return _CALL_US + features * _FEATURE_CALL_US + rows * per_row / 1000.0


def leaf_bits(trees: Sequence[Any], leaf_values: Sequence[np.ndarray]) -> LeafBits | None:
    """Bit-vector tables for `trees` (scikit-learn ``Tree`` objects) whose leaves' outputs are
    the rows of `leaf_values` (one array per tree, by node); None when a tree has more than 64
    leaves or the tables would pass `TABLE_BYTES`."""
    if not trees:
        return None
    most_leaves = max(int(np.count_nonzero(tree.children_left == -1)) for tree in trees)
    sized = [(width, word) for width, word in _WORDS if most_leaves <= width]
    if not sized:
        return None
    width, word = sized[0]
    splits = [np.asarray(tree.feature)[np.asarray(tree.children_left) != -1] for tree in trees]
    features = len(np.unique(np.concatenate(splits)))
    rows = sum(len(split) for split in splits) + 2 * features  # thresholds, at most, and 2 more
    if rows * len(trees) * width // 8 > TABLE_BYTES:
        return None
    return LeafBits(trees, leaf_values, width, word)


def missing_go_to_left(tree: Any) -> list[int]:
    """Where each node sends NaN (1: left), as ``tree_.apply`` does; all right for a
    scikit-learn without missing-value support (it refuses NaN before any walk)."""
    missing = getattr(tree, "missing_go_to_left", None)
    return [0] * int(tree.node_count) if missing is None else np.asarray(missing).tolist()


def _number_leaves(left: list[int], right: list[int]) -> tuple[list[int], list[int], list[int]]:
    """The tree's leaves left to right, and for each node the number of its subtree's first
    leaf and how many leaves the subtree holds."""
    leaves: list[int] = []
    first = [0] * len(left)
    count = [0] * len(left)
    stack: list[tuple[int, bool]] = [(0, False)]
    while stack:
        node, done = stack.pop()
        if done:
            count[node] = len(leaves) - first[node]
            continue
        first[node] = len(leaves)
        if left[node] == -1:
            leaves.append(node)
            count[node] = 1
            continue
        stack.extend(((node, True), (right[node], False), (left[node], False)))
    return leaves, first, count


def _prefix_masks(
    nodes: list[tuple[float, int, int, bool]],
    trees: int,
    width: int,
    word: type[np.unsignedinteger[Any]],
) -> tuple[np.ndarray, np.ndarray]:
    """One feature's distinct thresholds, sorted, and its table: row ``k`` holds, per tree,
    the AND of the masks of that tree's nodes whose threshold is among the first ``k``; a last
    row, for NaN, the AND of the masks of the nodes that send NaN right."""
    nodes.sort(key=lambda node: node[0])
    thresholds = sorted({node[0] for node in nodes})
    full = (1 << width) - 1
    current = [full] * trees
    rows = [list(current)]
    position = 0
    for threshold in thresholds:
        while position < len(nodes) and nodes[position][0] == threshold:
            _, tree, mask, _ = nodes[position]
            current[tree] &= mask
            position += 1
        rows.append(list(current))
    missing = [full] * trees
    for _, tree, mask, nan_left in nodes:
        if not nan_left:
            missing[tree] &= mask
    rows.append(missing)
    return np.asarray(thresholds, dtype=np.float64), np.asarray(rows, dtype=word)
