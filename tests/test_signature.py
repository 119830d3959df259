import math

import numpy as np
import pytest

from sklearn_specsig.architectures import ROLES
from sklearn_specsig.errors import SpectralWarning
from sklearn_specsig.signature import (
    MatrixEntry,
    Signature,
    feature_names,
    flatten,
    resample_depth,
    signature_values,
    unflatten,
)
from sklearn_specsig.spectral import alpha_hill, log_norm


def _power_law(alpha, n=64):
    # Quantiles of a Pareto law whose Hill estimate is close to alpha.
    u = np.arange(n) / n
    return (1 - u) ** (-1 / (alpha - 1))


def test_signature_values_place_and_average_experts():
    spectra = {
        "q0": _power_law(3.0),
        "q1": _power_law(4.0),
        "g1e0": _power_law(2.5),
        "g1e1": _power_law(3.5),
    }
    entries = [
        MatrixEntry("q0", "q", 0),
        MatrixEntry("q1", "q", 1),
        MatrixEntry("g1e0", "gate", 1, 0),
        MatrixEntry("g1e1", "gate", 1, 1),
    ]
    values = signature_values(entries, spectra, "alpha_hill", n_layers=2)
    assert values.shape == (7, 2)
    assert values[0, 0] == alpha_hill(spectra["q0"])
    assert values[0, 1] == alpha_hill(spectra["q1"])
    # MoE experts of one role and layer are averaged (paper Sec. 5.4)
    expected = (alpha_hill(spectra["g1e0"]) + alpha_hill(spectra["g1e1"])) / 2
    assert values[ROLES.index("gate"), 1] == pytest.approx(expected)
    assert np.isnan(values[ROLES.index("gate"), 0])
    assert np.isnan(values[ROLES.index("down")]).all()


def test_undefined_expert_is_left_out_of_the_average():
    spectra = {"e0": _power_law(3.0), "e1": np.zeros(8)}
    entries = [MatrixEntry("e0", "up", 0, 0), MatrixEntry("e1", "up", 0, 1)]
    with pytest.warns(SpectralWarning, match="e1"):
        values = signature_values(entries, spectra, "alpha_hill", n_layers=1)
    assert values[ROLES.index("up"), 0] == alpha_hill(spectra["e0"])


def test_with_metric_recomputes_from_spectra():
    spectra = {f"l{i}": _power_law(2 + i) * (i + 1) for i in range(3)}
    entries = tuple(MatrixEntry(f"l{i}", "v", i) for i in range(3))
    sig = Signature(
        values=signature_values(entries, spectra, "alpha_hill", 3),
        roles=ROLES,
        n_layers=3,
        architecture="test",
        metric="alpha_hill",
        fingerprint="0" * 40,
        spectra=spectra,
        entries=entries,
    )
    other = sig.with_metric("log_norm")
    assert other.metric == "log_norm"
    np.testing.assert_array_equal(
        other.values[ROLES.index("v")], [log_norm(spectra[f"l{i}"]) for i in range(3)]
    )
    assert other.spectra is sig.spectra
    custom = sig.with_metric(lambda lam: lam.max())
    assert custom.values[ROLES.index("v"), 2] == pytest.approx(spectra["l2"].max())
    assert sig.flatten().shape == (21,)
    assert sig.flatten(n_layers=5).shape == (35,)
    assert "fingerprint='000000000000'" in repr(sig)


def test_flatten_is_module_major_and_unflatten_inverts_it():
    rng = np.random.default_rng(0)
    Z = rng.random((5, 7, 4))
    X = flatten(Z)
    assert X.shape == (5, 28)
    # feature j = module_index * n_layers + layer
    assert X[2, 3 * 4 + 1] == Z[2, 3, 1]
    np.testing.assert_array_equal(unflatten(X, 7), Z)
    assert list(feature_names(2)[:3]) == ["q_000", "q_001", "k_000"]
    assert len(feature_names(4)) == 28


@pytest.mark.parametrize("n_modules", [0, 5])
def test_unflatten_rejects_a_feature_count_that_does_not_split(n_modules):
    with pytest.raises(ValueError, match="n_modules"):
        unflatten(np.zeros((2, 28)), n_modules)
    with pytest.raises(ValueError, match="2-D"):
        unflatten(np.zeros(28), 7)


def test_resample_depth():
    row = np.array([[1.0, 3.0, 2.0, 6.0], [np.nan] * 4, [np.nan, 1.0, np.nan, np.nan]])
    out = resample_depth(row, 7)
    # relative depth l / (L - 1): the ends are kept, the middle interpolated
    assert out[0, 0] == 1.0 and out[0, -1] == 6.0
    assert out[0, 1] == pytest.approx(1.0 + 2.0 * 0.5)  # depth 1/6 = half way to layer 1
    assert np.isnan(out[1]).all()
    np.testing.assert_array_equal(out[2], np.ones(7))
    # resampling onto the native depth is the identity
    np.testing.assert_allclose(resample_depth(row[:1], 4), row[:1])
    with pytest.raises(ValueError, match="positive int"):
        resample_depth(row, 0)
    assert math.isclose(resample_depth(np.array([[2.0, 4.0]]), 1)[0, 0], 3.0)


def test_undefined_matrices_and_missing_layers(tmp_path):
    import torch

    from sklearn_specsig import compute_signature
    from tests._checkpoint_factories import llama_dir, llama_tensors

    tensors = llama_tensors(n_layers=3)
    zero = "model.layers.0.mlp.down_proj.weight"
    tensors[zero] = torch.zeros_like(tensors[zero])
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    with pytest.warns(SpectralWarning, match="rank below N/2"):
        sig = compute_signature(llama_dir(tmp_path / "m", tensors, num_hidden_layers=3),
                                cache=None, progress=False)
    undefined = sig.undefined_matrices()
    assert list(undefined) == [zero]
    assert "rank below N/2" in undefined[zero] and zero in undefined[zero]
    assert sig.missing_layers() == {"k": [1]}
    # Every NaN cell is accounted for by one of the two.
    nan_cells = {(sig.roles[r], layer) for r, layer in zip(*np.nonzero(np.isnan(sig.values)))}
    assert nan_cells == {("down", 0), ("k", 1)}
    with pytest.warns(SpectralWarning, match="all zeros"):
        assert sig.with_metric("log_norm").undefined_matrices().keys() == {zero}


def test_as_profiles_names_the_callers_remedy_and_keeps_nan():
    from sklearn_specsig.signature import as_profiles

    a, b = np.zeros((7, 3)), np.full((7, 5), np.nan)
    with pytest.raises(ValueError, match=r"depths \[3, 5\]; pass --n-layers N\.$"):
        as_profiles([a, b], hint="pass --n-layers N")
    out = as_profiles([a, b], n_layers=4)
    assert out.shape == (2, 7, 4) and np.isnan(out[1]).all() and (out[0] == 0).all()
