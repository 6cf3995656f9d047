"""A recipe's table from its cells' metrics: mean ± std per variant and column (via
:mod:`distmtl.evaluation.statistics`), paired differences against the reference variant, as Markdown and JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from distmtl.evaluation.statistics import paired, summarize
from distmtl.recipes.base import Recipe, Variant


@dataclass(frozen=True)
class Row:
    """A variant's runs: one metrics dict per seed, in seed order."""

    variant: Variant
    runs: list[dict[str, float]]


def _values(row: Row, key: str) -> list[float]:
    return [float(run.get(key, math.nan)) for run in row.runs]


def build_table(recipe: Recipe, rows: list[Row]) -> dict[str, Any]:
    """The table as data: per row, each column's metric key, values, mean, std and n (empty where the
    variant's runs do not report that metric), and the paired comparisons."""
    by_name = {(r.variant.dataset, r.variant.name): r for r in rows}
    table_rows = []
    for row in rows:
        cells = {}
        for column in recipe.columns:
            key = row.variant.key(column)
            values = _values(row, key)
            if column.ratio_to:
                reference = _values(by_name[(row.variant.dataset, column.ratio_to)], key)
                values = [v / r if r else math.nan for v, r in zip(values, reference)]
            summary = summarize(values)
            cells[column.header] = {"key": key, "values": values, "mean": summary.mean, "std": summary.std,
                                    "n": summary.n, "text": summary.cell(column.digits)}
        table_rows.append({"dataset": row.variant.dataset, "variant": row.variant.name, "n": len(row.runs),
                           "cells": cells})
    table = {"recipe": recipe.name, "columns": [c.header for c in recipe.columns], "rows": table_rows,
             "paired": _paired(recipe, rows)}
    if recipe.analysis:
        table["analysis"] = recipe.analysis(rows)
    return table


def _paired(recipe: Recipe, rows: list[Row]) -> list[dict[str, Any]]:
    """Each variant minus the reference variant of its data set, seed by seed, on every comparison column
    that both report on that data set."""
    columns = [c for c in recipe.columns if c.header in recipe.compare]
    references = {r.variant.dataset: r for r in rows if r.variant.name == recipe.reference}
    comparisons = []
    for row in rows:
        reference = references.get(row.variant.dataset)
        if reference is None or row is reference:
            continue
        for column in columns:
            base, values = _values(reference, reference.variant.key(column)), _values(row, row.variant.key(column))
            if all(math.isnan(v) for v in base) or all(math.isnan(v) for v in values):
                continue
            result = paired(values, base)
            comparisons.append({"dataset": row.variant.dataset, "variant": row.variant.name,
                                "reference": recipe.reference, "column": column.header,
                                "mean_difference": result.mean_difference, "t": result.t, "p": result.p, "n": result.n})
    return comparisons


def to_markdown(table: dict[str, Any]) -> str:
    """The table (cells "mean ± std"; a cell's own n when fewer of the row's runs report it) and the paired
    differences, in Markdown."""
    rows = [[row["dataset"], row["variant"], str(row["n"]), *(_cell(row, header) for header in table["columns"])]
            for row in table["rows"]]
    text = _markdown(["data", "variant", "n", *table["columns"]], rows)
    if table["paired"]:
        paired = [[p["dataset"], p["variant"], p["column"], f"{p['mean_difference']:+.3f}", _number(p["t"]),
                   _number(p["p"]), str(p["n"])] for p in table["paired"]]
        text += (f"\n\nPaired differences against `{table['paired'][0]['reference']}` (same seeds; t-test on the "
                 "per-seed differences):\n\n"
                 + _markdown(["data", "variant", "metric", "Δ mean", "t", "p", "n"], paired))
    if table.get("analysis", {}).get("markdown"):
        text += "\n\n" + table["analysis"]["markdown"]
    return text


def _markdown(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of ``rows`` (cells as written: no number is reformatted)."""
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def _cell(row: dict[str, Any], header: str) -> str:
    cell = row["cells"][header]
    return cell["text"] + (f" (n={cell['n']})" if 0 < cell["n"] < row["n"] else "")


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.3g}"
