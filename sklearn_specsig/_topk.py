"""Top-k selection with a deterministic tie rule.

Every place that keeps "the k most similar" (``SignatureIndex`` chunk by
chunk, ``LineageClassifier.top_k``, the CLI tables) promises *most similar
first, exact ties by lowest index*.  ``numpy.argpartition`` does not keep
that promise at the k-th place: which of several tied values it keeps
depends on the selection algorithm, which differs between numpy versions
and CPUs (the SIMD sorts).  These helpers use ``argpartition`` only to find
the k-th value, then decide the ties by position, so the result depends on
the values alone.

NaN counts as ``-inf``, the least similar value (and ties with it by
position, like every other tie).
"""

import numpy as np

__all__ = ["select_top_k", "top_k"]


def _as_keys(S):
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2:
        raise ValueError(f"top-k needs a 2-D array of scores, got shape {S.shape}.")
    return np.where(np.isnan(S), -np.inf, S)


def select_top_k(S, k):
    """Columns of the ``k`` largest scores of each row, in column order.

    Parameters
    ----------
    S : array-like of shape (n_rows, n_columns)
        Scores; NaN is the smallest.
    k : int
        ``1 <= k <= n_columns``.

    Returns
    -------
    ndarray of shape (n_rows, k), dtype intp
        For each row, the columns of its ``k`` largest scores in ascending
        column order; of several columns tied at the k-th score, the
        lowest-numbered ones.  Keeping column order lets a caller merge
        candidate blocks whose columns are already in index order.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig._topk import select_top_k
    >>> select_top_k(np.array([[0.5, 0.9, 0.5, 0.5, 0.1]]), 2).tolist()
    [[0, 1]]
    """
    keys = _as_keys(S)
    n_rows, n_cols = keys.shape
    if not 1 <= k <= n_cols:
        raise ValueError(f"k={k} must be between 1 and the {n_cols} columns.")
    if k == n_cols:
        return np.broadcast_to(np.arange(n_cols), (n_rows, n_cols)).copy()
    # The k-th largest value of each row: argpartition's choice among ties
    # does not matter here, only the value it lands on.
    kth = np.take_along_axis(
        keys, np.argpartition(-keys, k - 1, axis=1)[:, k - 1 : k], axis=1
    )
    above = keys > kth
    tied = keys == kth
    # Of the ties, the first (k - n_above) columns, counted left to right.
    room = k - above.sum(axis=1, keepdims=True)
    keep = above | (tied & (np.cumsum(tied, axis=1) <= room))
    return np.nonzero(keep)[1].reshape(n_rows, k)


def top_k(S, k, index=None):
    """The ``k`` largest scores of each row, largest first, ties by index.

    Parameters
    ----------
    S : array-like of shape (n_rows, n_columns)
        Scores; NaN is the smallest.
    k : int
        ``1 <= k <= n_columns``.
    index : ndarray of shape (n_rows, n_columns), optional
        The index each column stands for, increasing along each row (as a
        merge of chunks in order leaves it); ties go to the lower index.
        Default: the column number.

    Returns
    -------
    scores : ndarray of shape (n_rows, k)
        The selected scores, NaN where the score was NaN.
    indices : ndarray of shape (n_rows, k)
        Their indices (``index`` entries, or column numbers).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig._topk import top_k
    >>> scores, indices = top_k(np.array([[0.5, 0.9, np.nan, 0.5]]), 3)
    >>> scores.tolist(), indices.tolist()
    ([[0.9, 0.5, 0.5]], [[1, 0, 3]])
    """
    S = np.asarray(S, dtype=np.float64)
    cols = select_top_k(S, k)
    keys = np.take_along_axis(_as_keys(S), cols, axis=1)
    # Stable on ascending column order: equal scores keep index order.
    order = np.argsort(-keys, axis=1, kind="stable")
    cols = np.take_along_axis(cols, order, axis=1)
    scores = np.take_along_axis(S, cols, axis=1)
    if index is None:
        return scores, cols
    return scores, np.take_along_axis(np.asarray(index), cols, axis=1)
