"""sklearn_specsig.plotting: the figures draw their input, headless (Agg)."""

import re
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")

from sklearn_specsig import compute_signature
from sklearn_specsig.architectures import ROLES
from sklearn_specsig.datasets import make_model_zoo
from sklearn_specsig.kernels import pairwise_similarity
from sklearn_specsig.plotting import (
    plot_embedding,
    plot_esd,
    plot_layer_profiles,
    plot_predicted_vs_true,
    plot_similarity_heatmap,
)
from sklearn_specsig.spectral import alpha_hill, reference_spectrum


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Two families (llama, and gpt2 with no gate), a base and one derived
    model each, four layers; ``zoo.sigs`` are their signatures."""
    zoo = make_model_zoo(
        tmp_path_factory.mktemp("plot-zoo"), n_families=2, n_derived=1, n_layers=4,
        hidden_size=16, architectures=("llama", "gpt2"), random_state=0,
    )
    zoo.sigs = [compute_signature(p, cache=None, progress=False) for p in zoo.paths]
    return zoo


def assert_drawn(fig, min_coloured=0.001):
    """The rendered figure is not blank: many distinct colours, and a share
    of saturated (non-grey) pixels, which only the data produces."""
    fig.set_dpi(60)  # small: rendering is the slow part of these tests
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    assert rgba.ndim == 3 and rgba.shape[2] == 4
    assert len(np.unique(rgba.reshape(-1, 4), axis=0)) > 50
    rgb = rgba[..., :3].astype(int)
    assert (rgb.max(axis=-1) - rgb.min(axis=-1) > 40).mean() > min_coloured


# --------------------------------------------------------------------------
# plot_layer_profiles


def test_layer_profiles_lines_are_the_signature_rows(zoo):
    axes = plot_layer_profiles(zoo.sigs)
    assert isinstance(axes, np.ndarray) and axes.shape == (len(ROLES),)
    assert [ax.get_title() for ax in axes] == list(ROLES)
    for ax, role in zip(axes, ROLES):
        row = ROLES.index(role)
        expected = [s for s in zoo.sigs if np.isfinite(s.values[row]).any()]
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == [s.source for s in expected]
        for line, sig in zip(lines, expected):
            np.testing.assert_array_equal(line.get_ydata(), sig.values[row])
            np.testing.assert_array_equal(line.get_xdata(), np.arange(sig.n_layers))
    # GPT-2 has no gate: only the two llama models are in that panel.
    assert len(axes[ROLES.index("gate")].get_lines()) == 2
    fig = axes[0].figure
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [s.source for s in zoo.sigs]
    assert axes[0].get_ylabel() == "PL_Alpha_Hill"
    assert_drawn(fig)


def test_layer_profiles_relative_depth_and_missing_roles():
    rng = np.random.default_rng(0)
    short, deep = 2 + rng.random((7, 4)), 2 + rng.random((7, 7))
    short[ROLES.index("gate")] = np.nan
    deep[ROLES.index("gate")] = np.nan
    deep[ROLES.index("up"), 2] = np.nan  # one missing layer: a gap, not a skip
    axes = plot_layer_profiles([short, deep], labels=["short", "deep"])
    assert [ax.get_title() for ax in axes] == [r for r in ROLES if r != "gate"]
    up = axes[[ax.get_title() for ax in axes].index("up")]
    (a, b) = up.get_lines()
    np.testing.assert_allclose(a.get_xdata(), np.arange(4) / 3)
    np.testing.assert_allclose(b.get_xdata(), np.arange(7) / 6)
    np.testing.assert_array_equal(b.get_ydata(), deep[ROLES.index("up")])
    assert up.get_xlabel() == "relative depth"
    # An explicitly asked-for role no model has is an empty panel, no error.
    axes = plot_layer_profiles([short, deep], roles=["q", "gate"])
    assert len(axes[0].get_lines()) == 2 and len(axes[1].get_lines()) == 0


def test_layer_profiles_on_given_axes(zoo):
    grid = plt.subplots(2, 2)[1]
    axes = plot_layer_profiles(zoo.sigs[:2], roles=["q", "down"], labels=["a", "b"], axes=grid)
    assert list(axes) == [grid[0, 0], grid[0, 1]]
    assert [t.get_text() for t in grid[0, 0].get_legend().get_texts()] == ["a", "b"]
    np.testing.assert_array_equal(
        axes[1].get_lines()[1].get_ydata(), zoo.sigs[1].values[ROLES.index("down")]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"signatures": []}, "signatures is empty"),
        ({"signatures": [np.ones((6, 4))]}, "signature 0 has shape (6, 4)"),
        ({"signatures": [np.ones((7, 4))], "labels": ["a", "b"]}, "labels has length 2"),
        ({"signatures": [np.ones((7, 4))], "roles": ["query"]}, "must name one or more"),
        ({"signatures": [np.full((7, 4), np.nan)]}, "no role has a finite value"),
        ({"signatures": [np.ones((7, 4))], "roles": ["q", "k"], "axes": [0]}, "axes has 1 Axes"),
    ],
)
def test_layer_profiles_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        plot_layer_profiles(**kwargs)


# --------------------------------------------------------------------------
# plot_similarity_heatmap


def test_heatmap_is_S_sorted_by_family(zoo):
    S = pairwise_similarity(np.stack([s.flatten() for s in zoo.sigs]))
    shuffle = [2, 0, 3, 1]  # interleave the families
    S, families = S[np.ix_(shuffle, shuffle)], zoo.labels[shuffle]
    names = [f"m{i}" for i in shuffle]
    ax = plot_similarity_heatmap(S, labels=names, families=families)
    order = np.argsort(families, kind="stable")
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), S[np.ix_(order, order)])
    assert [t.get_text() for t in ax.get_yticklabels()] == [names[i] for i in order]
    assert [t.get_text() for t in ax.get_xticklabels()] == [names[i] for i in order]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == sorted(set(zoo.labels))
    # Tick labels of one family share its colour; the two families differ.
    colours = [matplotlib.colors.to_hex(t.get_color()) for t in ax.get_yticklabels()]
    assert colours[0] == colours[1] != colours[2] == colours[3]
    assert len(ax.figure.axes) == 2  # the image and its colorbar
    assert_drawn(ax.figure, min_coloured=0.1)


def test_heatmap_without_families_keeps_order():
    S = np.array([[1.0, 0.3, 0.5], [0.3, 1.0, 0.2], [0.5, 0.2, 1.0]])
    ax = plot_similarity_heatmap(S, cmap="magma")
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), S)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["model 0", "model 1", "model 2"]
    assert ax.get_legend() is None


@pytest.mark.parametrize(
    "S, kwargs, message",
    [
        (np.ones((3, 4)), {}, "square"),
        (np.ones(3), {}, "square"),
        (np.ones((3, 3)), {"labels": ["a", "b"]}, "labels has length 2; expected 3"),
        (np.ones((3, 3)), {"families": ["x"] * 4}, "families has length 4"),
        (np.ones((3, 3)), {"families": "xyz"}, "families must be a 1-D sequence"),
    ],
)
def test_heatmap_bad_input(S, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_similarity_heatmap(S, **kwargs)


# --------------------------------------------------------------------------
# plot_embedding


def test_embedding_points_colours_and_markers():
    rng = np.random.default_rng(0)
    X2d = rng.normal(size=(12, 2))
    clusters = np.array([0, 0, 1, 1, 2, 2, -1, 0, 1, 2, -1, 0])
    labels = np.array(["llama", "qwen"] * 6)
    ax = plot_embedding(X2d, clusters=clusters, labels=labels)
    points = ax.collections[0]
    np.testing.assert_array_equal(points.get_offsets(), X2d)
    faces = [tuple(c) for c in points.get_facecolors()]
    for i in range(12):
        for j in range(12):
            assert (faces[i] == faces[j]) == (clusters[i] == clusters[j])
    assert faces[6][:3] == (0.6, 0.6, 0.6)  # noise is grey
    paths = points.get_paths()
    assert np.array_equal(paths[0].vertices, paths[2].vertices)
    assert not np.array_equal(paths[0].vertices, paths[1].vertices)
    legends = [a for a in ax.get_children() if isinstance(a, matplotlib.legend.Legend)]
    titles = sorted(leg.get_title().get_text() for leg in legends)
    assert titles == ["cluster", "label"]
    cluster_legend = next(leg for leg in legends if leg.get_title().get_text() == "cluster")
    assert [t.get_text() for t in cluster_legend.get_texts()] == ["noise", "0", "1", "2"]
    assert_drawn(ax.figure)


def test_embedding_plain_scatter_has_no_legend():
    X2d = np.arange(10.0).reshape(5, 2)
    ax = plot_embedding(X2d)
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), X2d)
    assert ax.get_legend() is None


@pytest.mark.parametrize(
    "X2d, kwargs, message",
    [
        (np.ones((5, 3)), {}, "2 columns, got shape \\(5, 3\\)"),
        (np.ones(5), {}, "2 columns"),
        (np.ones((5, 2)), {"clusters": [0, 1]}, "clusters has length 2; expected 5"),
        (np.ones((5, 2)), {"labels": ["a"] * 6}, "labels has length 6"),
    ],
)
def test_embedding_bad_input(X2d, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_embedding(X2d, **kwargs)


# --------------------------------------------------------------------------
# plot_predicted_vs_true


def test_predicted_vs_true_skips_nan_pairs_and_spans_the_data():
    rng = np.random.default_rng(0)
    y_true = rng.uniform(20, 80, size=(15, 3))
    y_pred = y_true + rng.normal(0, 5, size=(15, 3))
    y_pred[2, 1] = np.nan
    y_true[5, 2] = np.nan
    ax = plot_predicted_vs_true(y_true, y_pred, names=["MMLU", "ARC", "GSM8K"])
    assert len(ax.collections) == 3
    for j, points in enumerate(ax.collections):
        keep = np.isfinite(y_true[:, j]) & np.isfinite(y_pred[:, j])
        np.testing.assert_array_equal(
            points.get_offsets(), np.column_stack([y_true[keep, j], y_pred[keep, j]])
        )
    assert len(ax.collections[1].get_offsets()) == 14
    diagonal = ax.get_lines()[0]
    np.testing.assert_array_equal(diagonal.get_xdata(), diagonal.get_ydata())
    both = np.concatenate([y_true[np.isfinite(y_true)], y_pred[np.isfinite(y_pred)]])
    assert diagonal.get_xdata()[0] <= both.min() and diagonal.get_xdata()[1] >= both.max()
    assert ax.get_xlim() == ax.get_ylim() == tuple(diagonal.get_xdata())
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["y = x", "MMLU", "ARC", "GSM8K"]
    assert_drawn(ax.figure)


def test_predicted_vs_true_one_benchmark():
    ax = plot_predicted_vs_true([1.0, 2.0, 3.0], [1.5, 2.0, np.nan])
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), [[1.0, 1.5], [2.0, 2.0]])
    assert ax.get_legend() is None
    ax = plot_predicted_vs_true([4.0, 4.0], [4.0, 4.0], names="MMLU")  # no range: padded
    lo, hi = ax.get_xlim()
    assert lo < 4.0 < hi and ax.get_legend() is not None


@pytest.mark.parametrize(
    "y_true, y_pred, kwargs, message",
    [
        ([1.0, 2.0], [1.0, 2.0, 3.0], {}, "y_true has shape \\(2,\\) but y_pred"),
        (np.ones((2, 2, 2)), np.ones((2, 2, 2)), {}, "1-D or 2-D"),
        (np.ones((3, 2)), np.ones((3, 2)), {"names": ["a"]}, "names has length 1; expected 2"),
        ([np.nan, 1.0], [1.0, np.nan], {}, "no \\(y_true, y_pred\\) pair is finite"),
    ],
)
def test_predicted_vs_true_bad_input(y_true, y_pred, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_predicted_vs_true(y_true, y_pred, **kwargs)


# --------------------------------------------------------------------------
# plot_esd


def _rank_deficient_spectrum():
    """Heavy-tailed 40 x 100 matrix of rank 30: 10 zero eigenvalues, the
    median one positive."""
    rng = np.random.default_rng(0)
    W = rng.standard_t(3, size=(40, 30)) @ rng.standard_t(3, size=(30, 100))
    eig = reference_spectrum(W)
    assert (eig == 0).sum() == 10
    return eig


@pytest.mark.parametrize("convention", ["net_esd", "paper"])
def test_esd_fit_line_and_x_min(convention):
    eig = _rank_deficient_spectrum()
    ax = plot_esd(eig[::-1], bins=20, convention=convention)  # any order
    alpha = alpha_hill(eig, convention=convention)
    n = eig.size
    x_min = np.sort(eig)[n // 2] if convention == "net_esd" else np.sort(eig)[n - n // 2 - 1]
    vline, fit = ax.get_lines()
    np.testing.assert_array_equal(vline.get_xdata(), [x_min, x_min])
    x, y = fit.get_xdata(), fit.get_ydata()
    assert x[0] == pytest.approx(x_min) and x[-1] == pytest.approx(eig.max())
    slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    assert slope == pytest.approx(-alpha, abs=1e-6)
    assert f"{alpha:.3f}" in ax.get_title()
    assert ax.get_xscale() == ax.get_yscale() == "log"
    # The histogram: 20 bars over the 30 positive eigenvalues only.
    bars = ax.patches
    assert len(bars) == 20
    assert bars[0].get_x() == pytest.approx(eig[eig > 0].min())
    area = sum(b.get_width() * b.get_height() for b in bars)
    assert area == pytest.approx(1.0)
    assert_drawn(ax.figure)


def test_esd_undefined_alpha_still_draws():
    eig = np.array([0.0, 0.0, 0.0, 1.0, 2.0])  # rank below N/2: x_min = 0
    with pytest.warns(Warning, match="x_min is zero"):
        ax = plot_esd(eig, bins=5)
    assert ax.get_title() == "PL_Alpha_Hill undefined"
    assert ax.get_lines() == [] and len(ax.patches) == 5


@pytest.mark.parametrize(
    "eig, kwargs, message",
    [
        (np.ones((3, 3)), {}, "1-D spectrum"),
        (np.array([1.0]), {}, "1-D spectrum of >= 2 values"),
        (np.array([1.0, np.nan, 2.0]), {}, "NaN or Inf"),
        (np.zeros(4), {}, "every eigenvalue is zero"),
        (np.arange(1.0, 5.0), {"bins": 0}, "bins=0 must be a positive int"),
        (np.arange(1.0, 5.0), {"convention": "hill"}, "convention='hill'"),
    ],
)
def test_esd_bad_input(eig, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_esd(eig, **kwargs)


# --------------------------------------------------------------------------
# Files and the optional dependency


def test_figure_saves_to_png(zoo, tmp_path):
    sig = zoo.sigs[0]
    ax = plot_esd(sig.spectra[sig.entries[0].label], bins=10)
    path = tmp_path / "esd.png"
    ax.figure.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000


def test_missing_matplotlib_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install 'sklearn_specsig\[plot\]'"):
        plot_esd(np.arange(1.0, 5.0))


def test_importing_the_module_does_not_import_matplotlib():
    code = "import sys, sklearn_specsig.plotting; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
