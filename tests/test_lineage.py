"""LineageClassifier: paper Eq. 4 on a synthetic zoo with known lineage.

The zoo (8 families of a base and 3 fine-tune-like derived models, 8
layers, real checkpoints on disk) is written and signed once per module;
``hidden_size=32`` keeps that to a few seconds.
"""

import pickle
import shutil
import warnings

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_specsig import SpectralSignatureTransformer
from sklearn_specsig.estimators._lineage import LineageClassifier
from sklearn_specsig.kernels import spearman_similarity
from sklearn_specsig.provenance import null_similarities

KERNELS = ["spearman", "rbf", "cosine"]


# -- scikit-learn's estimator checks ---------------------------------------


def _expected_failed_checks(estimator):
    if estimator.kernel == "spearman":
        return {
            "check_classifiers_train": (
                "the check fits make_blobs data of 2 features; with n_modules=1 "
                "the Spearman similarity of a 2-point profile is only +1 or -1 "
                "(which feature is larger), so 3 blobs cannot be told apart and "
                "training accuracy stays below the check's 0.83. The rbf and "
                "cosine instances run the same check's API assertions and pass."
            ),
        }
    return {}


@parametrize_with_checks(
    [LineageClassifier(kernel=k, n_modules=1) for k in KERNELS],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        # Constant or 1-feature rows make a Spearman similarity undefined
        # (NaN); predict then warns, which is not what the checks test.
        warnings.filterwarnings("ignore", ".*share no comparable", UserWarning)
        check(estimator)


# -- the zoo -------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo(family_zoo):
    return family_zoo


@pytest.mark.parametrize("kernel", KERNELS)
def test_derived_models_are_routed_to_their_base(zoo, kernel):
    base = zoo.is_base
    clf = LineageClassifier(kernel).fit(zoo.Z[base], zoo.labels[base])
    pred = clf.predict(zoo.Z[~base])
    accuracy = np.mean(pred == zoo.labels[~base])
    assert accuracy >= 0.95, f"{kernel}: accuracy {accuracy:.3f} on 24 derived models"
    # decision_function (8 classes: per-family similarities) agrees with predict.
    S = clf.decision_function(zoo.Z[~base])
    assert S.shape == (24, 8)
    np.testing.assert_array_equal(clf.classes_[S.argmax(axis=1)], pred)
    proba = clf.predict_proba(zoo.Z[~base])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], pred)


def test_pipeline_from_checkpoint_paths(zoo):
    pipe = make_pipeline(SpectralSignatureTransformer(cache=zoo.store), LineageClassifier())
    pipe.fit(zoo.base_paths, zoo.labels[zoo.is_base])
    pred = pipe.predict(zoo.derived_paths)
    np.testing.assert_array_equal(pred, zoo.labels[~zoo.is_base])
    restored = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(restored.predict(zoo.derived_paths[:4]), pred[:4])
    np.testing.assert_array_equal(
        restored.decision_function(zoo.derived_paths[:4]),
        pipe.decision_function(zoo.derived_paths[:4]),
    )


def test_several_references_per_family_take_the_best(zoo):
    # References: every base and its first fine-tune; a family's score is
    # its best reference's similarity (Eq. 4 over references).
    keep = np.tile([True, True, False, False], 8)  # zoo order: base, ft00, ft01, ft02
    assert (zoo.is_base <= keep).all()
    clf = LineageClassifier().fit(zoo.Z[keep], zoo.labels[keep])
    np.testing.assert_array_equal(clf.n_references_per_class_, np.full(8, 2))
    query = zoo.Z[~keep]
    S = spearman_similarity(query, zoo.Z[keep])
    labels = zoo.labels[keep]
    expected = np.stack([S[:, labels == c].max(axis=1) for c in clf.classes_], axis=1)
    np.testing.assert_allclose(clf.similarity(query), expected)
    np.testing.assert_array_equal(clf.predict(query), zoo.labels[~keep])


@pytest.mark.parametrize("kernel", ["spearman", "rbf"])
def test_held_out_family_is_rejected(zoo, kernel):
    held_out = zoo.families[-1]
    known = zoo.labels != held_out
    ref = known & zoo.is_base
    clf = LineageClassifier(kernel, threshold=0.5).fit(zoo.Z[ref], zoo.labels[ref])
    assert held_out not in clf.classes_
    pred_new = clf.predict(zoo.Z[zoo.labels == held_out])
    assert pred_new.tolist() == ["unknown"] * 4
    derived_known = known & ~zoo.is_base
    pred_known = clf.predict(zoo.Z[derived_known])
    assert np.mean(pred_known == zoo.labels[derived_known]) >= 0.95
    assert "unknown" not in pred_known.tolist()


def test_pvalues_small_for_related_large_for_unrelated(zoo):
    # References: bases and two fine-tunes per family; queries: the third.
    third = np.tile([False, False, False, True], 8)
    clf = LineageClassifier().fit(zoo.Z[~third], zoo.labels[~third])
    # 24 references in 8 families of 3: C(24, 2) - 8 * C(3, 2) cross pairs.
    assert clf.null_similarities_.size == 276 - 24
    P = clf.predict_pvalue(zoo.Z[third])
    own = zoo.labels[third][:, None] == clf.classes_[None, :]
    floor = 3 / (1 + 252)  # Bonferroni over the family's 3 references
    np.testing.assert_allclose(P[own], floor)
    assert P[~own].min() > 0.05 and np.median(P[~own]) > 0.3
    # explain(): the same numbers as a table, best family first.
    table = clf.explain(zoo.Z[third], n_families=2)
    assert list(table.columns) == ["query", "rank", "family", "similarity", "p_value",
                                   "n_null", "accepted"]
    first = table[table["rank"] == 1]
    assert first["family"].tolist() == zoo.labels[third].tolist()
    np.testing.assert_allclose(first["p_value"], floor)
    assert (table["n_null"] == 252).all()


def test_explain_names_queries_from_a_dataframe_index(zoo):
    pd = pytest.importorskip("pandas")
    Zdf = pd.DataFrame(zoo.Z, index=pd.Index(zoo.paths, name="model"))
    clf = LineageClassifier(threshold=0.5).fit(zoo.Z[zoo.is_base], zoo.labels[zoo.is_base])
    table = clf.explain(Zdf.iloc[[1, 5]], n_families=None)
    assert len(table) == 16
    assert table["query"].iloc[0] == zoo.paths[1]
    assert table.groupby("query")["accepted"].sum().tolist() == [1, 1]


def test_reparameterised_checkpoint_has_similarity_one(zoo, tmp_path):
    """Output-invariant reparameterisation (paper 5.3, appendix 7.6).

    Per layer: q * a, k / a (attention logits unchanged), v * b, o / b
    (attention output unchanged) and a permutation of the MLP's hidden units
    (rows of gate and up, columns of down).  Biases follow their weights.
    """
    rng = np.random.default_rng(1)
    for arch in ("llama", "qwen2"):
        src = next(p for p, a, b in zip(zoo.paths, zoo.architectures, zoo.is_base)
                   if a == arch and b)
        tensors = load_file(f"{src}/model.safetensors")
        new = dict(tensors)
        for layer in range(8):
            p = f"model.layers.{layer}."
            a, b = rng.uniform(0.2, 5.0, size=2)
            for name, factor in (("q", a), ("k", 1 / a), ("v", b), ("o", 1 / b)):
                for kind in ("weight", "bias"):
                    key = f"{p}self_attn.{name}_proj.{kind}"
                    if key in tensors:
                        new[key] = (tensors[key].double() * factor).float()
            perm = rng.permutation(tensors[f"{p}mlp.up_proj.weight"].shape[0])
            new[f"{p}mlp.gate_proj.weight"] = tensors[f"{p}mlp.gate_proj.weight"][perm]
            new[f"{p}mlp.up_proj.weight"] = tensors[f"{p}mlp.up_proj.weight"][perm]
            new[f"{p}mlp.down_proj.weight"] = tensors[f"{p}mlp.down_proj.weight"][:, perm]
        _assert_layer0_output_invariant(tensors, new)
        dst = tmp_path / f"{arch}-reparam"
        dst.mkdir()
        shutil.copy(f"{src}/config.json", dst / "config.json")
        save_file({k: v.contiguous() for k, v in new.items()}, str(dst / "model.safetensors"),
                  metadata={"format": "pt"})
        Z = SpectralSignatureTransformer(cache=None).fit_transform([src, str(dst)])
        assert spearman_similarity(Z[:1], Z[1:])[0, 0] == 1.0
        # ... and the lineage classifier routes the copy to the original's family.
        base = zoo.is_base
        clf = LineageClassifier().fit(zoo.Z[base], zoo.labels[base])
        assert clf.predict(Z[1:])[0] == zoo.labels[zoo.paths.index(src)]


def _assert_layer0_output_invariant(old, new):
    """The edit really is output-invariant: attention logits, value path, MLP."""
    import torch

    x = torch.randn(5, old["model.layers.0.self_attn.q_proj.weight"].shape[1],
                    dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = "model.layers.0."

    def lin(t, name):
        y = x @ t[f"{p}{name}.weight"].double().T
        bias = t.get(f"{p}{name}.bias")
        return y if bias is None else y + bias.double()

    def qk(t):  # one head-dim slice of q against k (GQA-agnostic)
        q, k = lin(t, "self_attn.q_proj"), lin(t, "self_attn.k_proj")
        return q[:, :8] @ k[:, :8].T

    def vo(t):
        v = lin(t, "self_attn.v_proj")
        w = t[f"{p}self_attn.o_proj.weight"].double()
        return v @ w[:, : v.shape[1]].T

    def mlp(t):
        h = torch.nn.functional.silu(lin(t, "mlp.gate_proj")) * lin(t, "mlp.up_proj")
        return h @ t[f"{p}mlp.down_proj.weight"].double().T

    for f in (qk, vo, mlp):
        torch.testing.assert_close(f(new), f(old), rtol=1e-5, atol=1e-6)
    assert not torch.equal(new[f"{p}self_attn.q_proj.weight"], old[f"{p}self_attn.q_proj.weight"])


# -- model selection and the API's edges ----------------------------------------


def test_grid_search_and_cross_validate(zoo):
    grid = GridSearchCV(
        LineageClassifier(),
        {"kernel": KERNELS, "threshold": [None, 0.5]},
        cv=StratifiedKFold(4),
        n_jobs=2,
    ).fit(zoo.Z, zoo.labels)
    assert grid.best_score_ >= 0.95
    scores = cross_validate(LineageClassifier("rbf"), zoo.Z, zoo.labels, cv=StratifiedKFold(4))
    assert scores["test_score"].mean() >= 0.95


def test_integer_labels_and_unknown_label_dtype():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 14))
    y = np.array([10, 20, 30])
    # Without threshold the default string unknown_label is never used.
    assert LineageClassifier(n_modules=2).fit(X, y).predict(X).dtype.kind == "i"
    with pytest.raises(TypeError, match="unknown_label=-1"):
        LineageClassifier(n_modules=2, threshold=0.5).fit(X, y)
    clf = LineageClassifier(n_modules=2, threshold=0.5, unknown_label=-1).fit(X, y)
    pred = clf.predict(np.vstack([X, rng.normal(size=(1, 14))]))
    assert pred.dtype.kind == "i"
    assert pred.tolist()[:3] == [10, 20, 30]
    with pytest.raises(ValueError, match="also a training label"):
        LineageClassifier(n_modules=2, threshold=0.5, unknown_label=10).fit(X, y)
    # set_params after fit is caught at predict time.
    clf = LineageClassifier(n_modules=2).fit(X, y).set_params(threshold=0.1)
    with pytest.raises(TypeError, match="does not fit the dtype"):
        clf.predict(X)


def test_string_unknown_label_is_not_truncated():
    X = np.random.default_rng(0).normal(size=(2, 7 * 4))
    clf = LineageClassifier(threshold=1.1, unknown_label="none-of-these").fit(X, ["a", "b"])
    assert clf.predict(X).tolist() == ["none-of-these"] * 2


def test_n_modules_must_divide_the_features():
    X = np.zeros((2, 10))
    with pytest.raises(ValueError, match="n_modules=7"):
        LineageClassifier().fit(X, [0, 1])


def test_missing_module_rows_are_left_out():
    # A GPT-2-like reference (no gate row) still matches its fine-tune.
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(3, 7, 6))
    Z[0, 4] = np.nan
    X = Z.reshape(3, -1)
    clf = LineageClassifier().fit(X, ["gpt2", "b", "c"])
    child = (Z[0] + 0.01 * rng.normal(size=(7, 6))).reshape(1, -1)
    assert clf.predict(child).tolist() == ["gpt2"]
    gpt2 = clf.classes_.tolist().index("gpt2")
    assert clf.similarity(child)[0, gpt2] == pytest.approx(1.0)


def test_query_with_nothing_comparable():
    X = np.random.default_rng(0).normal(size=(2, 7 * 4))
    nothing = np.full((1, 28), np.nan)
    clf = LineageClassifier(threshold=0.0).fit(X, ["a", "b"])
    assert clf.predict(nothing).tolist() == ["unknown"]
    np.testing.assert_allclose(clf.predict_proba(nothing), [[0.5, 0.5]])
    assert np.isnan(clf.predict_pvalue(nothing)).all()
    with pytest.warns(UserWarning, match="no comparable module row"):
        clone(clf).set_params(threshold=None).fit(X, ["a", "b"]).predict(nothing)


def test_predict_proba_is_a_monotone_softmax():
    X = np.random.default_rng(0).normal(size=(4, 7 * 5))
    clf = LineageClassifier(temperature=0.2).fit(X, [0, 1, 2, 3])
    S = clf.similarity(X[:2] + 0.3)
    expected = np.exp(S / 0.2) / np.exp(S / 0.2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(X[:2] + 0.3), expected)
    # Monotone: a larger similarity never gets a smaller probability.
    S, P = clf.similarity(X[::-1] + 0.5), clf.predict_proba(X[::-1] + 0.5)
    dS = S[:, :, None] - S[:, None, :]
    dP = P[:, :, None] - P[:, None, :]
    assert np.all(dP[dS > 1e-12] > 0) and np.all(np.abs(dP[np.abs(dS) <= 1e-12]) < 1e-12)


def test_null_is_cross_family_pairs():
    X = np.random.default_rng(0).normal(size=(5, 7 * 6))
    labels = np.array(["a", "a", "b", "c", "c"])
    clf = LineageClassifier().fit(X, labels)
    S = spearman_similarity(X)
    pairs = [S[i, j] for i in range(5) for j in range(i + 1, 5) if labels[i] != labels[j]]
    np.testing.assert_allclose(clf.null_similarities_, np.sort(pairs))
    np.testing.assert_allclose(null_similarities(X, labels), np.sort(pairs))


# -- one validation per call (issue 12) ----------------------------------------------


def test_a_prediction_validates_its_input_once(monkeypatch):
    import sklearn

    from sklearn_specsig.estimators import _base

    calls, configs = [], []
    real = _base.validate_data

    def counting(*args, **kwargs):
        calls.append(kwargs.get("reset"))
        return real(*args, **kwargs)

    def kernel(X, Y):
        configs.append(sklearn.get_config()["assume_finite"])
        return spearman_similarity(X, Y)

    monkeypatch.setattr(_base, "validate_data", counting)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 21))
    clf = LineageClassifier(kernel=kernel).fit(X, ["a", "b", "c", "d"])
    assert calls == [True]
    calls.clear()
    clf.predict(X[:2])
    # X once, at the boundary.  A named kernel then runs on the validated
    # arrays without scanning them again (assume_finite); a callable is the
    # user's code and keeps scikit-learn's checks in force.
    assert calls == [False] and configs[-1] is False
    assert sklearn.get_config()["assume_finite"] is False
    with pytest.raises(ValueError, match="infinity"):
        clf.predict(np.full((1, 21), np.inf))


def test_every_estimator_shares_the_kernel_names():
    from sklearn_specsig import KNNPerformanceRegressor, SignatureClusterer
    from sklearn_specsig.kernels import KERNELS

    for est in (LineageClassifier, KNNPerformanceRegressor, SignatureClusterer):
        (names,) = [c for c in est._parameter_constraints["kernel"] if hasattr(c, "options")]
        assert names.options == set(KERNELS), est


def test_a_callable_kernel_keeps_scikit_learns_own_input_checks():
    # The estimators skip the kernels' second finiteness scan of arrays they
    # validated themselves, but never for a user's callable: scikit-learn's
    # cosine_similarity must still refuse NaN rather than return NaN rows.
    from sklearn.metrics.pairwise import cosine_similarity

    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 14))
    X[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LineageClassifier(kernel=cosine_similarity, n_modules=7).fit(X, [0, 0, 1, 1])
