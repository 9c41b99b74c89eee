"""A small pre-processor that lets BigQuery Standard SQL idioms run on DuckDB.

It rewrites, outside string literals and comments only:

- ``[OFFSET(k)]`` / ``[SAFE_OFFSET(k)]`` (0-based) to ``[(k) + 1]`` and ``[ORDINAL(k)]`` /
  ``[SAFE_ORDINAL(k)]`` (1-based) to ``[(k)]``: DuckDB lists are 1-based and do not parse the
  BigQuery forms. (DuckDB returns NULL out of range, as the SAFE_ forms do.)
- three-part names ``project.dataset.table`` whose project is a known one (``publicdata``,
  ``bigquery-public-data`` or the configured project) to ``dataset.table``, so
  ``publicdata.samples.natality`` reads the warehouse table ``samples.natality``;
- BigQuery's backquoted names (`` `project.dataset.table` ``, `` `dataset.table` ``,
  `` `column` ``) to DuckDB's double-quoted identifiers;
- ``SAFE_CAST(`` to DuckDB's ``TRY_CAST(``;
- ``APPROX_QUANTILES(DISTINCT x, n)`` to the ``quantile_disc`` aggregate underneath (the
  ``APPROX_QUANTILES`` macro cannot take DISTINCT);
- BigQuery's analytic ``PERCENTILE_CONT(x, f)`` / ``PERCENTILE_DISC(x, f)`` (two arguments) to
  DuckDB's ``quantile_cont(x, f)`` / ``quantile_disc(x, f)``, which compute the same exact
  percentile (NULLs ignored); DuckDB's own one-argument ``WITHIN GROUP`` form is left alone.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

__all__ = ["PUBLIC_PROJECTS", "translate_query"]

PUBLIC_PROJECTS = ("publicdata", "bigquery-public-data")

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<string>[eE]?'(?:[^']|'')*(?:'|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<quoted>"(?:[^"]|"")*(?:"|\Z))
    | (?P<backtick>`(?:[^`\\]|\\.)*(?:`|\Z))
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<number>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)
    | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_INDEXERS = {"offset": 1, "safe_offset": 1, "ordinal": 0, "safe_ordinal": 0}


@dataclasses.dataclass
class _Token:
    kind: str
    text: str


def _tokens(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    for match in _TOKEN.finditer(query):
        kind = match.lastgroup or "punct"
        if kind == "tag":  # the inner group of a dollar-quoted string
            kind = "dollar"
        tokens.append(_Token(kind, match.group(0)))
    return tokens


def _code(tokens: list[_Token], start: int) -> Iterable[int]:
    """Indexes of the tokens from `start` on that are neither space nor comments."""
    for index in range(start, len(tokens)):
        if tokens[index].kind not in ("space", "comment"):
            yield index


def _next_code(tokens: list[_Token], start: int) -> int | None:
    return next(iter(_code(tokens, start)), None)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _unquote(token: _Token) -> str:
    if token.kind == "quoted":
        return token.text[1:-1].replace('""', '"')
    return token.text


def _rewrite_indexers(tokens: list[_Token]) -> list[_Token]:
    """``[OFFSET(k)]`` -> ``[(k) + 1]`` and ``[ORDINAL(k)]`` -> ``[(k)]``, nested ones too."""
    out: list[_Token] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.text == "[":
            name_at = _next_code(tokens, index + 1)
            open_at = _next_code(tokens, name_at + 1) if name_at is not None else None
            if (
                name_at is not None
                and open_at is not None
                and tokens[name_at].kind == "word"
                and tokens[name_at].text.lower() in _INDEXERS
                and tokens[open_at].text == "("
            ):
                close_at = _matching(tokens, open_at)
                end_at = _next_code(tokens, close_at + 1) if close_at is not None else None
                if close_at is not None and end_at is not None and tokens[end_at].text == "]":
                    inner = _rewrite_indexers(tokens[open_at + 1 : close_at])
                    shift = _INDEXERS[tokens[name_at].text.lower()]
                    out.append(_Token("punct", "[("))
                    out.extend(inner)
                    out.append(_Token("punct", ") + 1]" if shift else ")]"))
                    index = end_at + 1
                    continue
        out.append(token)
        index += 1
    return out


def _matching(tokens: list[_Token], open_at: int) -> int | None:
    depth = 0
    for index in range(open_at, len(tokens)):
        if tokens[index].text == "(":
            depth += 1
        elif tokens[index].text == ")":
            depth -= 1
            if depth == 0:
                return index
    return None


def _rewrite_backticks(tokens: list[_Token], projects: set[str]) -> list[_Token]:
    out: list[_Token] = []
    for token in tokens:
        if token.kind == "backtick" and token.text.endswith("`") and len(token.text) > 1:
            parts = token.text[1:-1].split(".")
            if len(parts) == 3 and parts[0].lower() in projects:
                parts = parts[1:]
            out.append(_Token("quoted", ".".join(_quote(part) for part in parts)))
        else:
            out.append(token)
    return out


def _rewrite_project_names(tokens: list[_Token], projects: set[str]) -> list[_Token]:
    """Drop ``project.`` from ``project.dataset.table`` when the project is a known one."""
    out: list[_Token] = []
    index = 0
    previous: _Token | None = None
    while index < len(tokens):
        token = tokens[index]
        if token.kind in ("word", "quoted") and (previous is None or previous.text != "."):
            end = _project_end(tokens, index)
            if (
                _unquote_run(tokens[index:end]).lower() in projects
                and end + 1 < len(tokens)
                and tokens[end].text == "."
                and _is_name_chain(tokens, end + 1, 2)
            ):
                index = end + 1  # the project and its dot
                previous = None
                continue
        if token.kind not in ("space", "comment"):
            previous = token
        out.append(token)
        index += 1
    return out


def _project_end(tokens: list[_Token], start: int) -> int:
    """End of a project name at `start`: one identifier, or words joined by dashes
    (BigQuery reads ``bigquery-public-data.samples.natality`` unquoted)."""
    if tokens[start].kind == "quoted":
        return start + 1
    end = start + 1
    while (
        end + 1 < len(tokens)
        and tokens[end].text == "-"
        and tokens[end + 1].kind in ("word", "number")
    ):
        end += 2
    return end


def _unquote_run(tokens: list[_Token]) -> str:
    return "".join(_unquote(token) for token in tokens)


def _is_name_chain(tokens: list[_Token], start: int, parts: int) -> bool:
    """`parts` identifiers joined by dots, with nothing in between, from `start` on."""
    index = start
    for part in range(parts):
        if index >= len(tokens) or tokens[index].kind not in ("word", "quoted"):
            return False
        if part < parts - 1:
            if index + 1 >= len(tokens) or tokens[index + 1].text != ".":
                return False
            index += 2
    return True


def _split_arguments(tokens: list[_Token]) -> list[list[_Token]]:
    """The comma-separated arguments of a call's tokens (between its parentheses)."""
    arguments: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.text in ("(", "["):
            depth += 1
        elif token.text in (")", "]"):
            depth -= 1
        if token.text == "," and depth == 0:
            arguments.append([])
        else:
            arguments[-1].append(token)
    return arguments


def _rewrite_distinct_quantiles(tokens: list[_Token]) -> list[_Token]:
    """``APPROX_QUANTILES(DISTINCT x, n)`` -> ``quantile_disc(DISTINCT x, <fractions>)``:
    a macro cannot take DISTINCT, the aggregate underneath can."""
    out: list[_Token] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        open_at = _next_code(tokens, index + 1)
        if (
            token.kind == "word"
            and token.text.lower() == "approx_quantiles"
            and open_at is not None
            and tokens[open_at].text == "("
        ):
            close_at = _matching(tokens, open_at)
            first = _next_code(tokens, open_at + 1)
            if (
                close_at is not None
                and first is not None
                and tokens[first].text.lower() == "distinct"
            ):
                arguments = _split_arguments(tokens[open_at + 1 : close_at])
                if len(arguments) == 2:
                    value = "".join(t.text for t in _rewrite_distinct_quantiles(arguments[0]))
                    number = "".join(t.text for t in _rewrite_distinct_quantiles(arguments[1]))
                    out.append(
                        _Token(
                            "punct",
                            f"quantile_disc({value}, list_transform(range(({number}) + 1), "
                            f"lambda i: i / ({number})))",
                        )
                    )
                    index = close_at + 1
                    continue
        out.append(token)
        index += 1
    return out


_PERCENTILES = {"percentile_cont": "quantile_cont", "percentile_disc": "quantile_disc"}


def _rewrite_percentiles(tokens: list[_Token]) -> list[_Token]:
    out: list[_Token] = []
    for index, token in enumerate(tokens):
        name = token.text.lower() if token.kind == "word" else ""
        if name in _PERCENTILES:
            open_at = _next_code(tokens, index + 1)
            close_at = None if open_at is None else _matching(tokens, open_at)
            if (
                open_at is not None
                and tokens[open_at].text == "("
                and close_at is not None
                and len(_split_arguments(tokens[open_at + 1 : close_at])) == 2
            ):
                out.append(_Token("word", _PERCENTILES[name]))
                continue
        out.append(token)
    return out


def _rewrite_safe_cast(tokens: list[_Token]) -> list[_Token]:
    out: list[_Token] = []
    for index, token in enumerate(tokens):
        if token.kind == "word" and token.text.lower() == "safe_cast":
            following = _next_code(tokens, index + 1)
            if following is not None and tokens[following].text == "(":
                out.append(_Token("word", "TRY_CAST"))
                continue
        out.append(token)
    return out


def translate_query(query: str, projects: Iterable[str] = ()) -> str:
    """Rewrite the BigQuery idioms of `query` into DuckDB SQL (see the module docstring).

    Args:
        query: BigQuery-flavoured SQL.
        projects: project names that map to this warehouse, besides ``publicdata`` and
            ``bigquery-public-data`` (pass the configured project).

    Returns:
        The query for DuckDB; unchanged when it uses none of the idioms.
    """
    known = {name.lower() for name in (*PUBLIC_PROJECTS, *projects) if name}
    prefixes = known | {name.split("-")[0] for name in known}
    tokens = _tokens(query)
    if not any(
        t.kind == "backtick"
        or (t.kind == "word" and (t.text.lower() in _INDEXERS or t.text.lower() in prefixes))
        or (t.kind == "quoted" and _unquote(t).lower() in known)
        or (t.kind == "word" and t.text.lower() in ("safe_cast", "distinct", *_PERCENTILES))
        for t in tokens
    ):
        return query
    tokens = _rewrite_backticks(tokens, known)
    tokens = _rewrite_project_names(tokens, known)
    tokens = _rewrite_indexers(tokens)
    tokens = _rewrite_safe_cast(tokens)
    tokens = _rewrite_percentiles(tokens)
    tokens = _rewrite_distinct_quantiles(tokens)
    return "".join(token.text for token in tokens)
