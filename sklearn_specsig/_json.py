"""Results as JSON: what ``specsig --json`` prints and the report embeds.

One conversion for both, so that the numbers a user reads from the command
line and from the HTML report are the same values.
"""

import math
import os

import numpy as np

__all__ = ["to_jsonable"]


def to_jsonable(value):
    """Numpy arrays and scalars to JSON types; NaN to null.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig._json import to_jsonable
    >>> to_jsonable({"a": np.array([1.5, np.nan]), "b": np.int64(2)})
    {'a': [1.5, None], 'b': 2}
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
