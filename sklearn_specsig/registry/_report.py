"""The registry's HTML report: one self-contained page people can look at.

Everything is inline (figures as base64 PNG, no script or style from the
network), so the file can be mailed, archived or opened offline.  The page
shows the similarity heatmap ordered by family, a dendrogram, each recorded
model's nearest *other* relative with its p-value and verdict, the answers
for the models given (the very records ``specsig index query --json``
prints, also embedded as JSON), and the ESD of a chosen model.

Every number in a table carries its full-precision value in a
``data-value`` attribute, so that a test (or a script) can read the page
back and compare it with the JSON exactly.
"""

import base64
import html
import io
import json
import math
import time

import numpy as np

from .._json import to_jsonable
from ..errors import SpecsigError
from ..kernels import pairwise_similarity
from ..signature import ROLES

__all__ = ["write_report"]

#: Recorded checkpoints tried for the ESD when no model is given.
_ESD_TRIES = 3

#: Recorded models drawn in the heatmap and dendrogram and listed in the
#: per-model table; a larger registry shows the first ones in family order.
MAX_REPORT_MODELS = 500

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1.5em; max-width: 1100px;
       color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { padding: 0.2em 0.7em; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.figure { max-width: 100%; border: 1px solid #ddd; }
.verdict { font-weight: bold; } .none { color: #888; } .note { color: #555; font-size: 0.9em; }
"""

# Says in the page itself whether every figure decoded: a browser test reads it.
_SCRIPT = """
window.addEventListener("load", function () {
  var figures = document.querySelectorAll("img.figure"), ok = 0;
  figures.forEach(function (im) { if (im.complete && im.naturalWidth > 0) { ok += 1; } });
  var status = document.getElementById("render-status");
  status.dataset.rendered = String(ok);
  status.dataset.total = String(figures.length);
  status.textContent = ok + " of " + figures.length + " figures rendered";
});
"""


def _figure(width, height, nrows=1, ncols=1):
    """A figure outside pyplot (no global state, no display needed)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("the report draws with matplotlib: "
                          "pip install 'sklearn_specsig[plot]'") from exc
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _png(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="figure" alt="" src="data:image/png;base64,{data}">'


def _plain(labels):
    """Labels matplotlib draws as given (a ``$`` would start mathtext)."""
    return [str(label).replace("$", r"\$") for label in labels]


def _num(value, fmt):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<td class="num" data-value="nan">n/a</td>'
    return f'<td class="num" data-value="{float(value)!r}">{format(value, fmt)}</td>'


def _text(value):
    return html.escape("-" if value is None else str(value))


def _table(header, rows, attrs=""):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict_html(verdict):
    family = verdict["family"]
    return (f'<p class="verdict" data-family="{_text(family)}" '
            f'data-p-value="{float(verdict["p_value"])!r}">verdict: '
            f'{_text(family) if family is not None else "<span class=none>none</span>"} '
            f'(p = {format(verdict["p_value"], ".3g")})</p>')


def _query_section(answers):
    if not answers:
        return ("<p class=note>No models were given (<code>specsig report REGISTRY "
                "--models MODEL...</code> places them in the registry here).</p>")
    parts = []
    for a in answers:
        rows = [[f"<td>{_text(n['name'])}</td>", f"<td>{_text(n['family'])}</td>",
                 _num(n["similarity"], ".4f"), _num(n["p_value"], ".3g")]
                for n in a["neighbours"]]
        parts.append(f'<h3>{_text(a["model"])}</h3>{_verdict_html(a["verdict"])}'
                     + _table(["neighbour", "family", "similarity", "p-value"], rows,
                              f'class="query" data-model="{_text(a["model"])}"'))
    return "".join(parts)


def _recorded_section(names, families, answers):
    rows = []
    for name, family, a in zip(names, families, answers):
        near = a["neighbours"][0] if a["neighbours"] else None
        rows.append([
            f"<td>{_text(name)}</td>", f"<td>{_text(family)}</td>",
            f"<td>{_text(near and near['name'])}</td>",
            f"<td>{_text(near and near['family'])}</td>",
            _num(near["similarity"] if near else None, ".4f"),
            _num(near["p_value"] if near else None, ".3g"),
            f"<td>{_text(a['verdict']['family'])}</td>",
            _num(a["verdict"]["p_value"], ".3g"),
        ])
    return _table(["model", "family", "nearest relative", "its family", "similarity",
                   "p-value", "verdict", "verdict p-value"], rows, 'id="recorded"')


def _heatmap(S, names, families):
    from ..plotting import plot_similarity_heatmap

    size = min(14.0, 4.0 + 0.18 * len(names))
    fig, axes = _figure(size, size)
    plot_similarity_heatmap(S, labels=_plain(names) if len(names) <= 80 else None,
                            families=_plain([f if f is not None else "(no family)"
                                             for f in families]),
                            ax=axes[0, 0])
    return _png(fig)


def _dendrogram(S, names, families):
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    if len(names) < 2:
        return "<p class=note>A dendrogram needs two recorded models.</p>"
    D = 1.0 - np.where(np.isnan(S), -1.0, S)  # incomparable: as far as it gets
    D = (D + D.T) / 2.0
    np.fill_diagonal(D, 0.0)
    Z = linkage(squareform(np.clip(D, 0.0, 2.0), checks=False), method="average")
    height = min(16.0, 2.0 + 0.22 * len(names))
    fig, axes = _figure(9.0, height)
    ax = axes[0, 0]
    labels = _plain([f"{n} [{f}]" if f is not None else n for n, f in zip(names, families)])
    dendrogram(Z, labels=labels if len(names) <= 120 else None, orientation="left", ax=ax,
               color_threshold=0.0, above_threshold_color="0.35")
    ax.set(title="Lineage tree: average linkage on 1 - similarity", xlabel="1 - similarity")
    return _png(fig)


def _esd_figure(signature, name):
    from ..plotting import plot_esd

    layers = sorted({e.layer for e in signature.entries})
    middle = layers[len(layers) // 2]
    chosen = [(e.role, e.label) for role in ROLES for e in signature.entries
              if e.layer == middle and e.role == role and e.expert in (None, 0)]
    seen, panels = set(), []
    for role, label in chosen:
        if role not in seen:
            seen.add(role)
            panels.append((role, label))
    if not panels:
        return f"<p class=note>{_text(name)} has no matrix at layer {middle}.</p>"
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = _figure(3.6 * ncols, 3.0 * nrows, nrows, ncols)
    for ax, (role, label) in zip(axes.ravel(), panels):
        try:
            plot_esd(signature.spectra[label], ax=ax, bins=40)
            ax.set_title(f"{role}: {ax.get_title()}", fontsize="small")
            ax.legend().remove()
        except ValueError as exc:
            ax.text(0.5, 0.5, str(exc), transform=ax.transAxes, ha="center", wrap=True)
    for ax in axes.ravel()[len(panels):]:
        ax.set_axis_off()
    fig.suptitle(f"ESD of {_plain([name])[0]}, layer {middle} (of {signature.n_layers})")
    return (f'<p class=note id="esd-model" data-model="{_text(name)}">ESD of {_text(name)} '
            f"at layer {middle} of {signature.n_layers}, one panel per module: the dashed "
            "line is x_min (k = n/2 largest eigenvalues in the tail), the line the fitted "
            "power law, its exponent PL_Alpha_Hill.</p>" + _png(fig))


def write_report(index, path, *, models=(), names=None, top=5, alpha=None, esd_model=None):
    """Write the registry's HTML report to ``path``.

    Parameters
    ----------
    index : ModelIndex
    path : str or os.PathLike
        The HTML file to write.
    models : sequence, default=()
        Models to place in the registry (anything :meth:`ModelIndex.query`
        takes; Signatures keep their spectra for the ESD).
    names : sequence of str, default=None
        Their names in the page.
    top : int, default=5
        Neighbours per query.
    alpha : float, default=None
        Verdict threshold; None uses the index's.
    esd_model : str, default=None
        Recorded model whose ESD is drawn when no ``models`` carry spectra;
        default the first whose checkpoint can be signed again.

    Returns
    -------
    dict
        The ``index query --json`` object of ``models`` embedded in the page.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from sklearn_specsig.registry import ModelIndex, write_report
    >>> folder = Path(tempfile.mkdtemp())
    >>> rng = np.random.default_rng(0)
    >>> index = ModelIndex(folder / "registry.sqlite")
    >>> _ = index.add(rng.normal(size=(6, 7, 8)), names=[f"m{i}" for i in range(6)],
    ...               families=["a", "a", "b", "b", "c", "c"])
    >>> payload = write_report(index, folder / "report.html",
    ...                        models=[rng.normal(size=(7, 8))], names=["new"])
    >>> payload["queries"][0]["model"], (folder / "report.html").stat().st_size > 10_000
    ('new', True)
    """
    summary = index.summary()
    X, rec_names, rec_families = index.signatures()
    order = sorted(range(len(rec_names)),
                   key=lambda i: (rec_families[i] is None, rec_families[i] or "", rec_names[i]))
    shown = order[:MAX_REPORT_MODELS]
    names_s = [rec_names[i] for i in shown]
    fams_s = [rec_families[i] for i in shown]
    grid = summary["n_layers"]
    profiles = [X[i].reshape(len(ROLES), grid) for i in shown]
    recorded = index.query_profiles(profiles, top=1, alpha=alpha, exclude=names_s)
    answers = index.query(list(models), names=names, top=top, alpha=alpha) if len(models) else []
    payload = {
        "registry": summary["path"], "alpha": summary["alpha"] if alpha is None else alpha,
        "null": {k: summary[k] for k in ("null_method", "n_null", "n_cross_family_pairs",
                                         "smallest_p_value", "smallest_verdict_p_value")},
        "queries": answers,
    }
    S = pairwise_similarity(X[shown], n_modules=len(ROLES)) if shown else np.empty((0, 0))
    figures = {
        "heatmap": _heatmap(S, names_s, fams_s) if len(shown) >= 2
        else "<p class=note>A heatmap needs two recorded models.</p>",
        "dendrogram": _dendrogram(S, names_s, fams_s),
    }
    esd_signature, esd_name = _esd_source(index, models, names, esd_model)
    figures["esd"] = (_esd_figure(esd_signature, esd_name) if esd_signature is not None
                      else f"<p class=note>{_text(esd_name)}</p>")
    note = ("" if len(shown) == len(rec_names) else
            f"<p class=note>The first {len(shown)} of {len(rec_names)} models by family "
            "are drawn and listed.</p>")
    # Inside <script>, "<!--" and "</script" end or hide the element: the
    # JSON escapes of <, > and & keep any name from doing so.
    data = (json.dumps(to_jsonable(payload), allow_nan=False).replace("<", "\\u003c")
            .replace(">", "\\u003e").replace("&", "\\u0026"))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Model registry report: {_text(summary['path'])}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Model registry report</h1>
<p>{_text(summary['path'])}: {summary['n_models']} models, {summary['n_families']} families
({summary['n_unlabelled']} unlabelled), compared on {grid} points of relative depth.
Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by sklearn_specsig.</p>
<p class=note>p-value of a similarity: its rank among the {summary['n_null']} similarities of
models of different families ({summary['null_method']}; smallest
{summary['smallest_p_value']:.3g}). Verdict p-value: how likely an unrelated model is to match
one of the {summary['n_families']} families this well (a normal model of the best similarity
of recorded models to other families, each pair of families counted once, floored at the
smallest p-value above, then corrected over the families; smallest
{summary['smallest_verdict_p_value']:.3g}); a family is named only below
alpha = {payload['alpha']}.</p>
<p id="render-status" data-rendered="0" data-total="?">figures not checked yet</p>
<h2>Queries</h2>{_query_section(answers)}
<h2>Similarity by family</h2>
<p class=note>Spearman similarity (paper Eq. 2) of every pair of recorded models, ordered by
family.</p>{note}{figures['heatmap']}
<h2>Lineage tree</h2>{figures['dendrogram']}
<h2>Recorded models: nearest other relative</h2>{_recorded_section(names_s, fams_s, recorded)}
<h2>Spectral density</h2>{figures['esd']}
<script type="application/json" id="specsig-queries">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return payload


def _esd_source(index, models, names, esd_model):
    """(Signature with spectra, its name) for the ESD, or (None, why not)."""
    for i, model in enumerate(models):
        if getattr(model, "spectra", None):
            return model, (names[i] if names else getattr(model, "source", "query"))
    # A few tries at most: a recorded hub id would be a download each.
    candidates = [esd_model] if esd_model else [m["name"] for m in index.list()
                                                if m["source"]][:_ESD_TRIES]
    reasons = []
    for name in candidates:
        try:
            return index.recorded_signature(name), name
        except (SpecsigError, ValueError, OSError, KeyError, RuntimeError) as exc:
            reasons.append(f"{name}: {exc}")
            if esd_model:
                break
    why = "; ".join(reasons[:3]) or "no recorded model has a checkpoint on record"
    return None, f"No ESD: {why}. Pass --models MODEL (or --esd NAME) to draw one."
