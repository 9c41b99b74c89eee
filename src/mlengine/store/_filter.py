"""The server-side `filter` of ml v1 list methods: ``jobId:census* AND state:FAILED``."""

from __future__ import annotations

import dataclasses
import re

from mlengine.errors import InvalidArgument

__all__ = ["FilterTerm", "parse_filter"]

_TERM = re.compile(
    r"^(?P<field>[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)(?P<op>:|=)(?P<value>.+)$"
)
"""``FIELD:VALUE`` (or ``=``): dotted field names without empty parts."""


@dataclasses.dataclass(frozen=True)
class FilterTerm:
    """One ``FIELD:VALUE`` term; `prefix` when the value ended in ``*``."""

    field: str
    value: str
    prefix: bool = False

    def matches(self, candidate: str | None) -> bool:
        """True when `candidate` satisfies the term."""
        if candidate is None:
            return False
        return candidate.startswith(self.value) if self.prefix else candidate == self.value


def parse_filter(text: str | None, fields: frozenset[str]) -> list[FilterTerm]:
    """Parse a conjunction of ``FIELD:VALUE`` terms joined by ``AND``/``and``/whitespace.

    `fields` are the allowed field names; ``labels.KEY`` is allowed when ``labels`` is.

    Raises:
        InvalidArgument: unsupported syntax or an unknown field.
    """
    if not text or not text.strip():
        return []
    terms: list[FilterTerm] = []
    tokens = text.split()
    for position, token in enumerate(tokens):
        if token in ("AND", "and"):
            if position in (0, len(tokens) - 1) or tokens[position - 1] in ("AND", "and"):
                raise InvalidArgument(
                    f"Unsupported filter term {token!r} in {text!r}: AND joins two FIELD:VALUE "
                    "terms."
                )
            continue
        match = _TERM.match(token)
        if match is None:
            raise InvalidArgument(
                f"Unsupported filter term {token!r}: use FIELD:VALUE terms joined by AND "
                f"(VALUE may end in * for a prefix match)."
            )
        field, value = match["field"], _unquoted(match["value"], token)
        base = field.split(".", 1)[0] if field.startswith("labels.") else field
        if base not in fields or field == "labels":
            raise InvalidArgument(
                f"Unsupported filter field {field!r}. Supported: "
                f"{', '.join(sorted(f if f != 'labels' else 'labels.KEY' for f in fields))}."
            )
        prefix = value.endswith("*")
        terms.append(FilterTerm(field, value.rstrip("*") if prefix else value, prefix))
    return terms


def _unquoted(value: str, token: str) -> str:
    """`value` without the double quotes around it; a quote anywhere else is refused.

    Raises:
        InvalidArgument: an unbalanced or inner double quote.
    """
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if '"' in value:
        raise InvalidArgument(
            f"Unsupported filter term {token!r}: a quoted value must be one word in double "
            'quotes, e.g. name:"census".'
        )
    return value
