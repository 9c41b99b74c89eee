"""Offline sample datasets for the tutorials: ``iris``, ``natality``, ``blackfriday``, ``census``.

Each loads into the warehouse schema ``samples`` (``mlengine datasets load-sample NAME``). All but
iris are synthetic: generated in fixed-size blocks, deterministic by seed, streamed as Arrow
record batches so that tens of millions of rows load in bounded memory.
"""

from __future__ import annotations

from mlengine.data.samples._base import SampleDataset
from mlengine.data.samples._load import SAMPLES, load_sample

__all__ = ["SAMPLES", "SampleDataset", "load_sample"]
