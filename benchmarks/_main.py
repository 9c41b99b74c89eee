"""The scaffolding every benchmark's ``main`` shares: progress lines on stderr, a scratch
directory removed afterwards unless kept, and the results printed as JSON or as a report."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["fail", "print_results", "progress", "scratch_directory"]


def progress(message: str) -> None:
    """One line of progress on stderr (stdout carries the results)."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def scratch_directory(prefix: str, keep: bool) -> Iterator[Path]:
    """A new temporary directory, removed on leaving unless `keep` (then its path is said)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        if keep:
            progress(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def fail(error: BaseException) -> int:
    """Say why the run stopped, on stderr; the exit code of a failed run (1)."""
    print(f"ERROR: {type(error).__name__}: {error}", file=sys.stderr)
    return 1


def print_results(
    data: Mapping[str, Any], as_json: bool, report: Callable[[Mapping[str, Any]], str]
) -> None:
    """The results on stdout: as JSON, or as the benchmark's human-readable report."""
    print(json.dumps(data, indent=2) if as_json else report(data))
