"""How commands print: one document per command, encoded as ``-o json|yaml|table``.

``json`` is a single JSON document (a list for listings), ``yaml`` the same document in
YAML, ``table`` columns under a header (a listing: one row per item; one object: one
row per field).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
OUTPUTS = ("json", "yaml", "table")


def output_option(default: str) -> Callable[[F], F]:
    """``-o/--output`` with this command's default encoding."""
    return click.option("-o", "--output", "output", type=click.Choice(OUTPUTS),
                        default=default, show_default=True,
                        help="How to print: one JSON or YAML document, or a table.")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Columns under an upper-case header, two spaces apart."""
    cells = [[c.upper() for c in columns]]
    cells += [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
                     .rstrip() for line in cells)


def dump(document: Any, output: str, *, columns: Sequence[str] | None = None) -> str:
    """``document`` encoded; ``columns`` pick what a listing's table shows."""
    if output == "json":
        return json.dumps(document, indent=2)
    if output == "yaml":
        import yaml

        text: str = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
        return text.rstrip("\n")
    if isinstance(document, list):
        return table(document, columns or (list(document[0]) if document else ["result"]))
    return table([{"field": k, "value": v} for k, v in document.items()], ["field", "value"])


def emit(document: Any, output: str, *, columns: Sequence[str] | None = None) -> None:
    click.echo(dump(document, output, columns=columns))
