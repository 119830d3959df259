"""Text tables, JSON and signature files for the ``specsig`` command."""

import csv
import json
import math
from pathlib import Path

import numpy as np

from .._json import to_jsonable
from ..checkpoints import short_names
from ..signature import feature_names

__all__ = ["short_names", "to_jsonable"]  # re-exported for the commands


def _cell(value):
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def format_table(header, rows):
    """A plain, aligned text table (numbers right-aligned, 3 decimals)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(str(h)), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    numeric = [bool(rows) and all(isinstance(r[i], int | float | np.number) for r in rows)
               for i in range(len(header))]

    def line(values):
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    out = [line([str(h) for h in header]), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def print_json(value):
    print(json.dumps(to_jsonable(value), indent=2))


def write_signatures(path, model_ids, Z, n_layers):
    """Write flattened signatures to ``.csv``, ``.npz`` or ``.parquet``.

    One row per model, indexed by model id, columns ``"{role}_{layer:03d}"``
    (the layout of ``SpectralSignatureTransformer``).
    """
    path = Path(path)
    columns = list(feature_names(n_layers))
    suffix = path.suffix.lower()
    if suffix == ".npz":
        np.savez(path, signatures=Z, models=np.asarray(model_ids, dtype=str),
                 features=np.asarray(columns))
    elif suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["model", *columns])
            for model, row in zip(model_ids, Z):
                writer.writerow([model, *("" if math.isnan(v) else repr(float(v)) for v in row)])
    elif suffix == ".parquet":
        try:
            import pandas as pd

            frame = pd.DataFrame(Z, index=pd.Index(model_ids, name="model"), columns=columns)
            frame.to_parquet(path)
        except ImportError as exc:
            raise ValueError(
                f"writing {path.name} needs pandas and pyarrow ({exc}); "
                "pip install pandas pyarrow, or write .csv or .npz."
            ) from exc
    else:
        raise ValueError(
            f"-o {path}: unknown output format {suffix or '(none)'}; use .csv, .npz or .parquet."
        )
    return path


def read_scores(path):
    """Benchmark scores from a CSV: a ``model`` column and one per benchmark.

    Returns
    -------
    models : list of str
    names : list of str
    Y : ndarray of shape (n_models, n_benchmarks), NaN for empty cells
    """
    # utf-8-sig: spreadsheet exports start with a byte-order mark.
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows or "model" not in rows[0]:
        raise ValueError(
            f"{path}: expected a header row with a 'model' column and one column "
            "per benchmark, e.g. 'model,arc,mmlu'."
        )
    header = rows[0]
    at = header.index("model")
    names = [h for i, h in enumerate(header) if i != at]
    if not names:
        raise ValueError(f"{path}: no benchmark columns besides 'model'.")
    models, Y = [], []
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}:{line_no}: {len(row)} cells, the header has {len(header)}.")
        models.append(row[at])
        try:
            Y.append([float(c) if c.strip() else math.nan for i, c in enumerate(row) if i != at])
        except ValueError as exc:
            raise ValueError(f"{path}:{line_no}: {exc}; scores must be numbers.") from exc
    if not models:
        raise ValueError(f"{path}: no model rows.")
    return models, names, np.asarray(Y, dtype=float)
