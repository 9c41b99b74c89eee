"""DuckDB's exceptions translated into mlengine's error tree, with one-line messages."""

from __future__ import annotations

import re

import duckdb

from mlengine.errors import (
    AlreadyExists,
    InvalidArgument,
    MLEngineError,
    NotFound,
    OperationFailed,
)

__all__ = ["is_lock_conflict", "is_read_only_refusal", "one_line", "translate"]

_KIND = re.compile(r"^[A-Za-z ]*Error: ")
_LINE = re.compile(r"^LINE (\d+): (.*)$")
_SAMPLE = re.compile(r"\bsamples\.(natality|iris|blackfriday|census)\b", re.IGNORECASE)


def is_lock_conflict(error: BaseException) -> bool:
    """Another process holds the warehouse file's lock."""
    text = str(error)
    return isinstance(error, duckdb.IOException) and (
        "Could not set lock" in text or "Conflicting lock" in text
    )


def is_read_only_refusal(error: BaseException) -> bool:
    """A statement that writes ran on a read-only connection."""
    return "attached in read-only mode" in str(error)


def _position(lines: list[str], query: str | None) -> str:
    """`` (line L, column C)`` from DuckDB's ``LINE n: text`` and caret lines, if any."""
    for index, line in enumerate(lines):
        match = _LINE.match(line)
        if not match or index + 1 >= len(lines) or "^" not in lines[index + 1]:
            continue
        number, shown = int(match.group(1)), match.group(2)
        caret = lines[index + 1].index("^") - (len(line) - len(shown))
        if shown.startswith("...") and query is not None:
            query_lines = query.splitlines()
            snippet = shown[3:].rstrip(".")
            source = query_lines[number - 1] if 0 < number <= len(query_lines) else ""
            start = source.find(snippet[: max(1, min(len(snippet), 30))])
            if start < 0:
                return f" (line {number})"
            caret = start + caret - 3
        return f" (line {number}, column {caret + 1})"
    return ""


def one_line(error: BaseException, query: str | None = None) -> str:
    """DuckDB's message without its ``X Error:`` prefix, its explanation lines joined, and the
    position it reports appended."""
    lines = str(error).splitlines()
    head: list[str] = []
    for line in lines:
        if not line.strip() or _LINE.match(line):
            break
        head.append(line.strip())
    message = _KIND.sub("", " ".join(head)) or type(error).__name__
    return message + _position(lines, query)


def translate(error: duckdb.Error, query: str | None = None) -> MLEngineError:
    """The mlengine error for a DuckDB error (raise it ``from error``).

    Syntax errors, bad casts, unknown columns and invalid input are InvalidArgument; unknown
    tables, schemas, functions and missing files are NotFound; an object that exists already is
    AlreadyExists; anything else is OperationFailed.
    """
    message = one_line(error, query)
    if isinstance(error, duckdb.ParserException):
        if message.startswith("syntax error"):
            return InvalidArgument(f"SQL {message}")
        return InvalidArgument(f"SQL syntax error: {message}")
    if isinstance(error, duckdb.CatalogException):
        if "already exists" in message:
            return AlreadyExists(message)
        sample = _SAMPLE.search(message)
        if sample and "does not exist" in message:
            message += (
                f" Load the sample with: mlengine datasets load-sample {sample.group(1).lower()}"
            )
        return NotFound(message)
    if isinstance(error, duckdb.IOException):
        if "No files found" in message or "No such file" in message or "does not exist" in message:
            return NotFound(message)
        return InvalidArgument(message)
    if isinstance(
        error,
        duckdb.BinderException
        | duckdb.ConversionException
        | duckdb.InvalidInputException
        | duckdb.OutOfRangeException
        | duckdb.TypeMismatchException
        | duckdb.ConstraintException
        | duckdb.NotImplementedException
        | duckdb.SyntaxException
        | duckdb.InvalidTypeException
        | duckdb.DependencyException
        | duckdb.PermissionException
        | duckdb.SequenceException,
    ):
        return InvalidArgument(message)
    return OperationFailed(message)
