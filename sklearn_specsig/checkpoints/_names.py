"""Short, readable names for models given as paths or hub ids.

Used wherever a model is shown or recorded by name: the command line's
tables and the model registry's default names.
"""

import os
from pathlib import Path

__all__ = ["short_names"]


def short_names(models):
    """Readable, unique names for models given as paths or hub ids.

    The last path component, extended leftwards only where two models
    would otherwise share a name.

    Parameters
    ----------
    models : sequence of str or os.PathLike
        Paths or hub ids, as given.

    Returns
    -------
    list of str

    Examples
    --------
    >>> from sklearn_specsig.checkpoints import short_names
    >>> short_names(["a/x/model", "b/x/model", "org/name", "other", "other"])
    ['a/x/model', 'b/x/model', 'name', 'other', 'other#2']
    """
    parts = [tuple(p for p in Path(os.fspath(m)).parts if p not in ("/", "\\"))
             or (os.fspath(m),) for m in models]
    depth = [1] * len(parts)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        # Only different models sharing a name need a longer one.
        owners = {}
        for name, p in zip(names, parts):
            owners.setdefault(name, set()).add(p)
        grow = [i for i, n in enumerate(names) if len(owners[n]) > 1 and depth[i] < len(parts[i])]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    # The same model given twice keeps both rows, told apart by "#2", "#3".
    seen = {}
    for i, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name}#{seen[name]}"
    return names
