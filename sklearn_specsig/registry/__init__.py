"""A lineage service for a model registry: a persistent index with calibrated
verdicts (:class:`ModelIndex`), and a report people can look at
(:func:`write_report`).

The rooms, every import pointing down:

- :mod:`._tables`: the SQL tables of a registry file and its row format;
- :mod:`._db`: connections and transactions (what survives a kill, what
  two writers see);
- :mod:`._null`: the cross-family null and the verdict's p-value (numpy);
- :mod:`._index`: :class:`ModelIndex` (signing, search, answers);
- :mod:`._report`: the self-contained HTML report.
"""

from ._index import ModelIndex
from ._report import write_report

__all__ = ["ModelIndex", "write_report"]
