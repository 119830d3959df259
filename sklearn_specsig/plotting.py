"""Figures in the style of "Spectral Signatures of Large Language Models".

matplotlib is optional (``pip install 'sklearn_specsig[plot]'``) and is
imported only when a function is called.  Every function draws on the Axes it
is given, or on a new figure when none is, and returns what it drew on; none
calls ``plt.show()`` or changes rcParams.
"""

import math

import numpy as np

from .architectures import ROLES

__all__ = ["plot_embedding", "plot_esd", "plot_layer_profiles", "plot_predicted_vs_true",
           "plot_similarity_heatmap"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "p", "h")
_METRIC_NAMES = {"alpha_hill": "PL_Alpha_Hill"}


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "plotting needs matplotlib: pip install 'sklearn_specsig[plot]'"
        ) from exc
    return plt


def _palette(n):
    import matplotlib

    name = "tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"
    points = range(n) if n <= 20 else np.linspace(0.0, 1.0, n)
    return [matplotlib.colormaps[name](x) for x in points]


def _new_axes(ax, plt, figsize=None):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _per_item(values, n, what, noun, default):
    """``values`` as a list of ``n`` entries, or ``default`` when None."""
    if values is None:
        return list(default)
    ndim = getattr(values, "ndim", 1)
    if isinstance(values, str) or ndim != 1 or not hasattr(values, "__len__"):
        raise ValueError(f"{what} must be a 1-D sequence with one entry per {noun}.")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{what} has length {len(values)}; expected {n}, one per {noun}.")
    return values


def _stable_order(keys):
    """Indices that sort ``keys`` stably (as strings when types are mixed)."""
    try:
        return np.argsort(np.asarray(keys, dtype=object), kind="stable")
    except TypeError:
        return np.argsort(np.asarray([str(k) for k in keys]), kind="stable")


def _is_noise(cluster):
    return not isinstance(cluster, str) and np.ndim(cluster) == 0 and cluster == -1


def _as_profile(sig, i):
    if hasattr(sig, "values") and hasattr(sig, "roles"):
        values, roles = np.asarray(sig.values, dtype=float), tuple(sig.roles)
        source, metric = getattr(sig, "source", None), getattr(sig, "metric", None)
        label = f"model {i}" if source is None else str(source)
    else:
        values, roles, label, metric = np.asarray(sig, dtype=float), ROLES, f"model {i}", None
    if values.ndim != 2 or values.shape[0] != len(roles) or values.shape[1] < 1:
        raise ValueError(f"signature {i} has shape {values.shape}; expected ({len(roles)}, "
                         f"n_layers) with rows {', '.join(roles)}.")
    return dict(zip(roles, values)), values.shape[1], label, metric


def plot_layer_profiles(signatures, *, labels=None, roles=None, axes=None):
    """Depth profiles of the metric, one panel per module role (Fig. 1/6/8).

    Parameters
    ----------
    signatures : list of Signature or of array-like of shape (7, n_layers)
        Arrays have rows ``q, k, v, o, gate, up, down``.  When the models
        differ in depth, x is the relative depth ``layer / (n_layers - 1)``.
    labels : list of str, optional
        Legend entry per model; defaults to ``sig.source`` or ``"model i"``.
    roles : list of str, optional
        Panels to draw; defaults to every role with a finite value in some
        model.  A model whose row is all NaN (a role its architecture lacks)
        is left out of that panel.
    axes : array-like of matplotlib Axes, optional
        At least one Axes per role; a new figure is made when None.

    Returns
    -------
    ndarray of matplotlib Axes of shape (n_roles,)

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    >>> import numpy as np
    >>> from sklearn_specsig.plotting import plot_layer_profiles
    >>> rng = np.random.default_rng(0)
    >>> Z = [2.0 + rng.random((7, 12)), 2.5 + rng.random((7, 12))]
    >>> axes = plot_layer_profiles(Z, labels=["base", "fine-tune"])
    >>> axes.shape, [ax.get_title() for ax in axes[:3]]
    ((7,), ['q', 'k', 'v'])
    >>> plt.close(axes[0].figure)
    """
    plt = _pyplot()
    from matplotlib.lines import Line2D

    if hasattr(signatures, "roles") or getattr(signatures, "ndim", 0) == 2:
        signatures = [signatures]
    profiles = [_as_profile(sig, i) for i, sig in enumerate(signatures)]
    if not profiles:
        raise ValueError("signatures is empty; pass at least one signature.")
    labels = _per_item(labels, len(profiles), "labels", "model", [p[2] for p in profiles])
    known = list(dict.fromkeys([*ROLES, *(r for p in profiles for r in p[0])]))
    if roles is None:
        roles = [r for r in known if any(np.isfinite(p[0].get(r, np.nan)).any() for p in profiles)]
        if not roles:
            raise ValueError("no role has a finite value in any signature; nothing to plot.")
    else:
        roles = [roles] if isinstance(roles, str) else list(roles)
        if not roles or any(r not in known for r in roles):
            raise ValueError(f"roles={roles!r} must name one or more of the roles {known}.")
    relative = len({p[1] for p in profiles}) > 1
    if axes is None:
        ncols = min(len(roles), 4)
        nrows = math.ceil(len(roles) / ncols)
        fig, grid = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows),
                                 squeeze=False, layout="constrained")
        grid = grid.ravel()
        for extra in grid[len(roles):]:
            fig.delaxes(extra)
    else:
        grid = np.asarray(axes, dtype=object).ravel()
        if grid.size < len(roles):
            raise ValueError(f"axes has {grid.size} Axes but {len(roles)} roles are to be drawn.")
    panels = grid[: len(roles)]
    metrics = {p[3] for p in profiles}
    metric = metrics.pop() if len(metrics) == 1 and None not in metrics else "alpha_hill"
    colors = _palette(len(profiles))
    for ax, role in zip(panels, roles):
        drawn = False
        for (rows, depth, _, _), label, color in zip(profiles, labels, colors):
            y = rows.get(role)
            if y is None or not np.isfinite(y).any():
                continue
            x = np.arange(depth) / max(depth - 1, 1) if relative else np.arange(depth)
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, color=color, label=str(label))
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, f"no {role} module", transform=ax.transAxes,
                    ha="center", va="center", color="0.5")
        ax.set(title=role, xlabel="relative depth" if relative else "layer",
               ylabel=_METRIC_NAMES.get(metric, metric))
    handles = [Line2D([], [], color=c, marker="o", markersize=3, label=str(label))
               for label, c in zip(labels, colors)]
    if axes is None:
        fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    else:
        panels[0].legend(handles=handles, fontsize="small")
    return panels


def plot_similarity_heatmap(S, *, labels=None, families=None, ax=None, cmap="viridis"):
    """The model-by-model similarity matrix (paper Eq. 2, Fig. 7).

    Parameters
    ----------
    S : array-like of shape (n_models, n_models)
        E.g. :func:`sklearn_specsig.kernels.pairwise_similarity`.
    labels : list of str, optional
        Tick label per model; defaults to ``"model i"``.
    families : list, optional
        Lineage label per model.  Rows and columns are then sorted by family
        (stable), tick labels take the family's colour, coloured bars along
        both axes mark the families and a legend names them.
    ax : matplotlib Axes, optional
    cmap : str or Colormap, default="viridis"

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    >>> import numpy as np
    >>> from sklearn_specsig.plotting import plot_similarity_heatmap
    >>> S = np.array([[1.0, 0.2, 0.9], [0.2, 1.0, 0.1], [0.9, 0.1, 1.0]])
    >>> ax = plot_similarity_heatmap(S, labels=["a", "b", "c"], families=["x", "y", "x"])
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['a', 'c', 'b']
    >>> plt.close(ax.figure)
    """
    plt = _pyplot()
    S = np.asarray(S, dtype=float)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] == 0:
        raise ValueError(f"S must be a non-empty square (n, n) matrix, got shape {S.shape}.")
    n = S.shape[0]
    labels = _per_item(labels, n, "labels", "model", [f"model {i}" for i in range(n)])
    order = np.arange(n)
    if families is not None:
        families = _per_item(families, n, "families", "model", ())
        order = _stable_order(families)
    ax = _new_axes(ax, plt, figsize=(max(4.0, 0.25 * n + 3.0), max(3.5, 0.25 * n + 2.5)))
    image = ax.imshow(S[np.ix_(order, order)], cmap=cmap, interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label="similarity")
    names = [str(labels[i]) for i in order]
    fontsize = "small" if n <= 30 else 5
    ax.set_xticks(np.arange(n), names, rotation=90, fontsize=fontsize)
    ax.set_yticks(np.arange(n), names, fontsize=fontsize)
    if families is not None:
        _family_bars(ax, [families[i] for i in order])
    ax.set(xlim=(-0.5, n - 0.5), ylim=(n - 0.5, -0.5))
    return ax


def _family_bars(ax, families, width=6.0):
    """Bars of family colour left of and below the image, and a legend."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import offset_copy

    unique = list(dict.fromkeys(families))
    colors = dict(zip(unique, _palette(len(unique))))
    shift = width / 2 + 1
    left = offset_copy(ax.get_yaxis_transform(), fig=ax.figure, x=-shift, units="points")
    below = offset_copy(ax.get_xaxis_transform(), fig=ax.figure, y=-shift, units="points")
    start = 0
    for stop in range(1, len(families) + 1):
        if stop < len(families) and families[stop] == families[start]:
            continue
        span = [start - 0.5, stop - 0.5]
        style = {"color": colors[families[start]], "linewidth": width,
                 "solid_capstyle": "butt", "clip_on": False}
        ax.add_artist(Line2D([0, 0], span, transform=left, **style))
        ax.add_artist(Line2D(span, [0, 0], transform=below, **style))
        start = stop
    ax.tick_params(axis="both", length=0, pad=width + 3)
    for tick_labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        for text, family in zip(tick_labels, families):
            text.set_color(colors[family])
    handles = [Patch(color=colors[f], label=str(f)) for f in unique]
    ax.legend(handles=handles, title="family", loc="lower center", bbox_to_anchor=(0.5, 1.01),
              ncol=min(len(unique), 4), fontsize="small", frameon=False)


def plot_embedding(X2d, *, clusters=None, labels=None, ax=None):
    """2-D scatter of an embedding of signatures (paper Fig. 9).

    Parameters
    ----------
    X2d : array-like of shape (n_samples, 2)
        E.g. the first two columns of ``SignatureClusterer().fit(X).embedding_``.
    clusters : array-like of shape (n_samples,), optional
        Colour of each point; ``-1`` (noise) is grey.
    labels : array-like of shape (n_samples,), optional
        True label (lineage) of each point, drawn as its marker.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
        Its first collection holds the points in the order of ``X2d``.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    >>> import numpy as np
    >>> from sklearn_specsig.plotting import plot_embedding
    >>> X2d = np.array([[0.0, 0.0], [0.1, 0.2], [3.0, 3.1], [2.9, 3.0]])
    >>> ax = plot_embedding(X2d, clusters=[0, 0, 1, 1], labels=["a", "a", "b", "a"])
    >>> ax.collections[0].get_offsets().shape
    (4, 2)
    >>> plt.close(ax.figure)
    """
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.markers import MarkerStyle

    X = np.asarray(X2d, dtype=float)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"X2d must be a 2-D embedding with 2 columns, got shape {X.shape}.")
    n = X.shape[0]
    coloured = clusters is not None
    clusters = _per_item(clusters, n, "clusters", "sample", [0] * n)
    labels = None if labels is None else _per_item(labels, n, "labels", "sample", ())
    ax = _new_axes(ax, plt)
    groups = [clusters[i] for i in _stable_order(clusters)]
    unique = list(dict.fromkeys(groups))
    real = [c for c in unique if not _is_noise(c)]
    colors = {c: (0.6, 0.6, 0.6, 1.0) for c in unique if _is_noise(c)}
    colors.update(zip(real, _palette(len(real))))
    points = ax.scatter(X[:, 0], X[:, 1], c=np.array([colors[c] for c in clusters]).reshape(n, 4),
                        s=45, edgecolors="k", linewidths=0.5)
    legends = []
    if coloured:
        legends.append(("cluster", [Line2D([], [], linestyle="", marker="o", color=colors[c],
                                           label="noise" if _is_noise(c) else str(c))
                                    for c in unique]))
    if labels is not None:
        kinds = list(dict.fromkeys(labels[i] for i in _stable_order(labels)))
        markers = {k: MarkerStyle(_MARKERS[i % len(_MARKERS)]) for i, k in enumerate(kinds)}
        points.set_paths([markers[k].get_path().transformed(markers[k].get_transform())
                          for k in labels])
        legends.append(("label", [Line2D([], [], linestyle="", marker=markers[k], color="0.4",
                                         label=str(k)) for k in kinds]))
    ax.set(xlabel="embedding 1", ylabel="embedding 2")
    for k, (title, handles) in enumerate(legends):
        legend = ax.legend(handles=handles, title=title, fontsize="small",
                           loc=("upper left", "lower left")[k], bbox_to_anchor=(1.02, 1.0 - k))
        if k < len(legends) - 1:
            ax.add_artist(legend)  # keep it when the next legend replaces ax.legend_
    return ax


def plot_predicted_vs_true(y_true, y_pred, *, names=None, ax=None):
    """Predicted against true benchmark scores, with y = x (paper Fig. 4).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,) or (n_samples, n_benchmarks)
        Pairs where either is NaN are skipped.
    names : list of str, optional
        Benchmark names for the legend, one per column.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
        One collection per benchmark; the first line is the diagonal.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    >>> from sklearn_specsig.plotting import plot_predicted_vs_true
    >>> ax = plot_predicted_vs_true([[50, 30], [60, 35], [70, 20]],
    ...                             [[52, 31], [58, 33], [69, float("nan")]],
    ...                             names=["MMLU", "GSM8K"])
    >>> ax.get_xlim() == ax.get_ylim()
    True
    >>> plt.close(ax.figure)
    """
    plt = _pyplot()
    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has shape {p.shape}.")
    if t.ndim == 1:
        t, p = t[:, None], p[:, None]
    elif t.ndim != 2:
        raise ValueError(f"y_true and y_pred must be 1-D or 2-D, got shape {t.shape}.")
    n_bench = t.shape[1]
    given = names is not None
    names = [names] if isinstance(names, str) and n_bench == 1 else names
    default = [f"benchmark {j}" for j in range(n_bench)]
    names = _per_item(names, n_bench, "names", "benchmark", default)
    finite = np.isfinite(t) & np.isfinite(p)
    if not finite.any():
        raise ValueError("no (y_true, y_pred) pair is finite; nothing to plot.")
    ax = _new_axes(ax, plt)
    lo, hi = min(t[finite].min(), p[finite].min()), max(t[finite].max(), p[finite].max())
    pad = 0.05 * (hi - lo) if hi > lo else max(0.05 * abs(hi), 0.5)
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], linestyle="--", color="0.3", linewidth=1, label="y = x", zorder=1)
    colors = _palette(n_bench)
    for j in range(n_bench):
        keep = finite[:, j]
        ax.scatter(t[keep, j], p[keep, j], color=colors[j], s=25, alpha=0.85,
                   edgecolors="none", label=str(names[j]), zorder=2)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="true score", ylabel="predicted score")
    ax.set_aspect("equal", adjustable="box")
    if given or n_bench > 1:
        ax.legend(fontsize="small")
    return ax


def plot_esd(eigenvalues, *, ax=None, bins=50, convention="net_esd"):
    """Empirical spectral density on log-log axes with its fitted power-law tail.

    The histogram (density over the positive eigenvalues; zeros are left
    out) is drawn with a dashed line at ``x_min`` and the line
    ``p(λ) = (n_tail / n_positive) (α - 1) / x_min (λ / x_min)^(-α)`` over the
    tail, with α and ``x_min`` those of
    :func:`sklearn_specsig.spectral.alpha_hill`.

    Parameters
    ----------
    eigenvalues : array-like of shape (N,)
        A spectrum, e.g. ``Signature.spectra[label]``.
    ax : matplotlib Axes, optional
    bins : int, default=50
        Number of logarithmically spaced bins.
    convention : {"net_esd", "paper"}, default="net_esd"
        See :func:`~sklearn_specsig.spectral.alpha_hill`.

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    >>> import numpy as np
    >>> from sklearn_specsig.plotting import plot_esd
    >>> from sklearn_specsig.spectral import reference_spectrum
    >>> W = np.random.default_rng(0).standard_t(3, size=(64, 128))
    >>> ax = plot_esd(reference_spectrum(W), bins=30)
    >>> ax.get_xscale(), ax.get_title().startswith("PL_Alpha_Hill")
    ('log', True)
    >>> plt.close(ax.figure)
    """
    plt = _pyplot()
    from .spectral import alpha_hill

    lam = np.asarray(eigenvalues, dtype=float)
    if lam.ndim != 1 or lam.size < 2:
        raise ValueError(
            f"eigenvalues must be a 1-D spectrum of >= 2 values, got shape {lam.shape}."
        )
    if not np.isfinite(lam).all():
        raise ValueError("eigenvalues contain NaN or Inf; the matrix had non-finite weights.")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins={bins!r} must be a positive int.")
    if not (lam > 0.0).any():
        raise ValueError("every eigenvalue is zero; the log-scale ESD is empty.")
    alpha = alpha_hill(lam, convention=convention)
    lam = np.sort(np.clip(lam, 0.0, None))
    n_eig, half = lam.size, lam.size // 2
    if convention == "net_esd":
        x_min, tail = lam[half], lam[half:]
    else:
        x_min, tail = lam[n_eig - half - 1], lam[n_eig - half:]
    positive = lam[lam > 0.0]
    ax = _new_axes(ax, plt)
    lo, hi = positive[0], positive[-1]
    if not hi > lo:
        lo, hi = lo / 1.1, hi * 1.1
    ax.hist(positive, bins=np.geomspace(lo, hi, bins + 1), density=True, color="C0", alpha=0.6,
            label=f"ESD ({positive.size} of {n_eig} eigenvalues > 0)")
    ax.set(xscale="log", yscale="log", xlabel="eigenvalue λ", ylabel="density")
    if x_min > 0.0:
        ax.axvline(x_min, color="C3", linestyle="--", linewidth=1.2, label=f"x_min = {x_min:.3g}")
    if math.isfinite(alpha):
        x = np.geomspace(x_min, tail[-1], 64)
        scale = tail.size / positive.size * (alpha - 1.0) / x_min
        ax.plot(x, scale * (x / x_min) ** (-alpha), color="C1", linewidth=2,
                label=rf"fit $\propto \lambda^{{-{alpha:.2f}}}$")
        ax.set_title(f"PL_Alpha_Hill α = {alpha:.3f}")
    else:
        ax.set_title("PL_Alpha_Hill undefined")
    ax.legend(fontsize="small")
    return ax
