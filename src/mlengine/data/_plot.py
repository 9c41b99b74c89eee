"""Charts of query results, drawn as the tutorials draw them with ``df.plot(...)``.

matplotlib is imported here only, with the Agg backend, and without pyplot's global state.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from mlengine.errors import InvalidArgument, invalid_field

__all__ = ["PLOT_KINDS", "plot_table"]

PLOT_KINDS = ("bar", "line", "scatter")


def plot_table(
    table: pa.Table,
    path: str | Path,
    *,
    kind: str,
    x: str,
    y: str | Sequence[str],
    logy: bool = False,
    title: str | None = None,
) -> Path:
    """Draw `y` against `x` as a PNG at `path` (written atomically).

    Raises:
        InvalidArgument: unknown kind, a column not in `table`, non-numeric `y`, or no rows.
    """
    columns = [y] if isinstance(y, str) else list(y)
    if kind not in PLOT_KINDS:
        raise invalid_field("kind", "plot", f"one of {', '.join(PLOT_KINDS)}", kind)
    names = table.column_names
    for field, value in [("x", x)] + [("y", column) for column in columns]:
        if value not in names:
            raise invalid_field(
                field, "plot", f"a column of the result ({', '.join(names)})", value
            )
    if not columns:
        raise invalid_field("y", "plot", "at least one column", columns)
    if kind == "scatter" and len(columns) != 1:
        raise invalid_field("y", "plot", "one column for a scatter plot", columns)
    for column in columns:
        data_type = table.schema.field(column).type
        if not (
            pa.types.is_integer(data_type)
            or pa.types.is_floating(data_type)
            or pa.types.is_decimal(data_type)
            or pa.types.is_boolean(data_type)
        ):
            raise invalid_field("y", "plot", "a numeric column", f"{column} ({data_type})")
    if table.num_rows == 0:
        raise InvalidArgument("The query returned no rows: there is nothing to plot.")

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # never switch a backend the caller chose
        matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frame = table.select(list(dict.fromkeys([x, *columns]))).to_pandas()
    for column in columns:
        frame[column] = frame[column].astype("float64")
    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if kind == "scatter":
        frame.plot(x=x, y=columns[0], kind="scatter", logy=logy, ax=axes)
    else:
        frame.plot(x=x, y=columns, kind=kind, logy=logy, ax=axes)
    axes.set_title(title or f"{', '.join(columns)} by {x}")
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp.png")
    try:
        figure.savefig(temporary, format="png")
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)
    return target
