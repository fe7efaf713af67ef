"""The feature catalog, generated from :mod:`features.definitions` (never written by hand).

``docs/features.md`` holds :func:`catalog_markdown` for the default configuration; regenerate it with
``python -m features.catalog docs/features.md`` (a test fails when it is stale).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from features.config import StrataConfig
from features.definitions import output_features

CATALOG_COLUMNS: tuple[str, ...] = ("name", "family", "description", "unit", "window")


def feature_catalog(config: StrataConfig) -> pd.DataFrame:
    """One row per output feature, in table order: ``name, family, description, unit, window``."""
    rows = [{"name": d.name, "family": d.family, "description": d.description, "unit": d.unit, "window": d.window}
            for d in output_features(config)]
    return pd.DataFrame(rows, columns=list(CATALOG_COLUMNS))


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def catalog_markdown(config: StrataConfig) -> str:
    """The catalog as a Markdown document (title, how it was generated, one table)."""
    cat = feature_catalog(config)
    lines = [
        "# Feature catalog",
        "",
        "Generated from `features/definitions.py` for the default configuration by",
        "`python -m features.catalog docs/features.md`; do not edit by hand (a test checks it is current).",
        "Every feature is computed as of a cutoff `as_of` from data at or before it; windows `Nd` cover",
        "`(as_of - N days, as_of]`. The table has `user_id` and `as_of` first, then these columns",
        f"({len(cat)} features; float64 with NaN where undefined, except `source_channel`, a string).",
        "",
        "| " + " | ".join(CATALOG_COLUMNS) + " |",
        "|" + "|".join("---" for _ in CATALOG_COLUMNS) + "|",
    ]
    for row in cat.itertuples(index=False):
        name = f"`{row.name}`"
        cells = (name, row.family, row.description, row.unit, row.window)
        lines.append("| " + " | ".join(_cell(str(v)) for v in cells) + " |")
    return "\n".join(lines) + "\n"


def write_catalog_doc(path: str | Path, config: StrataConfig | None = None) -> Path:
    """Write :func:`catalog_markdown` (default configuration unless given) to ``path``; return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(catalog_markdown(config or StrataConfig()), encoding="utf-8")
    return out


if __name__ == "__main__":
    print(write_catalog_doc(sys.argv[1] if len(sys.argv) > 1 else "docs/features.md"))
