import math
import warnings

import numpy as np
import pytest
import torch

from sklearn_specsig.errors import SpectralWarning
from sklearn_specsig.spectral import (
    METRICS,
    alpha_hill,
    compute_metric,
    reference_spectrum,
    resolve_device,
    spectra,
    spectrum,
)

SHAPES = [(64, 64), (48, 160), (160, 48), (1, 20)]


def _gaussian(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _heavy_tailed(shape, seed=0):
    # Student-t entries with 2.5 degrees of freedom and columns scaled by a
    # Pareto factor: a spectrum with a power-law tail, as trained layers have.
    rng = np.random.default_rng(seed)
    w = rng.standard_t(2.5, size=shape) * (1 + rng.pareto(2.0, size=shape[1]))
    return (w / np.abs(w).max()).astype(np.float32)


def _correlated(shape, seed=0):
    # Power-law singular values in random orthogonal bases: strong
    # correlations between entries, like a trained layer.
    rng = np.random.default_rng(seed)
    n = min(shape)
    u, _ = np.linalg.qr(rng.standard_normal((shape[0], n)))
    v, _ = np.linalg.qr(rng.standard_normal((shape[1], n)))
    sigma = (np.arange(1, n + 1) / (n + 1)) ** -1.0
    return ((u * sigma) @ v.T).astype(np.float32)


def _hill_by_hand(lam):
    """PL_Alpha_Hill written out term by term, in float64 (the reference)."""
    lam = sorted(float(x) for x in lam)
    i = len(lam) // 2
    x_min = lam[i]
    total = 0.0
    for value in lam[i:]:
        total += math.log(value / x_min)
    return 1.0 + (len(lam) - i) / total


def _metrics_by_hand(lam):
    lam = [float(x) for x in lam]
    alpha = _hill_by_hand(lam)
    top = max(lam)
    return {
        "alpha_hill": alpha,
        "log_norm": math.log10(sum(lam)),
        "spectral_norm": top,
        "log_spectral_norm": math.log10(top),
        "alpha_weighted": alpha * math.log10(top),
        "log_alpha_norm": math.log10(sum(x**alpha for x in lam)),
        "stable_rank": sum(lam) / top,
    }


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("make", [_gaussian, _heavy_tailed, _correlated])
def test_spectrum_matches_float64_reference(shape, make):
    w = make(shape)
    got = spectrum(w)
    expected = np.linalg.svd(w.astype(np.float64), compute_uv=False)[::-1] ** 2
    assert got.dtype == np.float32
    assert got.shape == (min(shape),)
    assert np.all(np.diff(got) >= 0)
    # float32 resolves eigenvalues to about eps * max(shape) * lambda_max;
    # below that they are reported as exact zeros.
    atol = max(shape) * np.finfo(np.float32).eps * expected.max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("shape", SHAPES[:3])
@pytest.mark.parametrize("make", [_gaussian, _heavy_tailed, _correlated])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_metric_matches_float64_reference(shape, make, seed):
    w = make(shape, seed)
    fast = spectrum(w)  # the default path: float32 Gram + eigvalsh
    expected = _metrics_by_hand(reference_spectrum(w))
    for metric in METRICS:
        got = compute_metric(metric, fast)
        assert got == pytest.approx(expected[metric], rel=1e-4), metric
    # the quantity the issue bounds: alpha's relative error in float32
    assert abs(alpha_hill(fast) / expected["alpha_hill"] - 1) < 1e-4


def test_reference_spectrum_is_float64_and_accepts_tensors():
    w = torch.from_numpy(_gaussian((30, 50)))
    lam = reference_spectrum(w)
    assert lam.dtype == np.float64
    np.testing.assert_allclose(
        lam, np.linalg.svd(w.double().numpy(), compute_uv=False)[::-1] ** 2, rtol=1e-10
    )


def test_float64_precision_path_matches_reference():
    w = _heavy_tailed((80, 120))
    np.testing.assert_allclose(
        spectrum(w, precision="float64"), reference_spectrum(w), rtol=1e-9, atol=1e-12
    )


def test_alpha_hill_worked_example():
    lam = np.array([0.5, 1.0, np.e, np.e**3])  # x_min = e, tail {e, e^3}
    assert alpha_hill(lam) == pytest.approx(1 + 2 / 2)
    # The paper's Eq. 1 puts x_min one rank lower (1.0), outside the tail.
    assert alpha_hill(lam, convention="paper") == pytest.approx(1 + 2 / (1 + 3))


@pytest.mark.parametrize("c", [1e-3, 0.37, 2.0, 1e3])
def test_alpha_is_scale_invariant(c):
    w = _heavy_tailed((96, 64))
    assert alpha_hill(spectrum(c * w)) == pytest.approx(alpha_hill(spectrum(w)), rel=1e-5)
    # Scale metrics move by exactly log10(c^2).
    assert compute_metric("log_norm", spectrum(c * w)) == pytest.approx(
        compute_metric("log_norm", spectrum(w)) + 2 * math.log10(c), abs=1e-5
    )


def test_alpha_is_invariant_to_permutations_and_orthogonal_maps():
    rng = np.random.default_rng(3)
    w = _heavy_tailed((96, 64)).astype(np.float64)
    p = np.eye(96)[rng.permutation(96)]
    q, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    base = alpha_hill(reference_spectrum(w))
    assert alpha_hill(reference_spectrum(p @ w @ q)) == pytest.approx(base, rel=1e-10)
    # and the float32 path agrees to its own precision
    assert alpha_hill(spectrum((p @ w @ q).astype(np.float32))) == pytest.approx(base, rel=1e-4)


def test_alpha_of_shuffled_matrix_is_larger():
    # Shuffling destroys correlations: the Marchenko-Pastur bulk has a much
    # lighter tail (larger alpha) than a heavy-tailed matrix.
    w = _correlated((64, 256))
    shuffled = np.random.default_rng(0).permutation(w.ravel()).reshape(w.shape)
    assert alpha_hill(spectrum(w)) + 1.0 < alpha_hill(spectrum(shuffled))


@pytest.mark.parametrize(
    "matrix, reason",
    [
        (np.zeros((8, 8), dtype=np.float32), "rank below N/2"),
        (np.ones((1, 5), dtype=np.float32), "1 eigenvalue"),
        (np.eye(6, dtype=np.float32), "flat"),
    ],
    ids=["all-zero", "1xN", "orthogonal"],
)
def test_undefined_alpha_is_nan_with_a_warning_naming_the_tensor(matrix, reason):
    with pytest.warns(SpectralWarning, match=f"layers.0.q_proj.*{reason}"):
        assert math.isnan(alpha_hill(spectrum(matrix), name="layers.0.q_proj"))


def test_rank_deficient_lora_delta_gives_nan():
    rng = np.random.default_rng(0)
    delta = (rng.standard_normal((64, 4)) @ rng.standard_normal((4, 64))).astype(np.float32)
    with pytest.warns(SpectralWarning, match="lora_B"):
        assert math.isnan(alpha_hill(spectrum(delta), name="lora_B"))


def test_non_finite_spectrum_gives_nan_for_every_metric():
    lam = np.array([1.0, np.nan, 3.0])
    for metric in METRICS:
        with pytest.warns(SpectralWarning, match="NaN or Inf"):
            assert math.isnan(compute_metric(metric, lam, name="w"))


def test_log_alpha_norm_does_not_overflow():
    lam = np.geomspace(1e3, 1e8, 50)
    alpha = _hill_by_hand(lam)
    expected = math.log10(sum(math.exp(alpha * math.log(x) - 600) for x in lam)) + 600 / math.log(10)
    assert compute_metric("log_alpha_norm", lam) == pytest.approx(expected, rel=1e-9)


def test_unknown_metric_and_precision_and_shape_errors():
    with pytest.raises(ValueError, match="metric='alpha' is unknown"):
        compute_metric("alpha", np.ones(3))
    assert compute_metric(lambda lam: lam.max(), np.array([1.0, 4.0])) == 4.0
    with pytest.raises(ValueError, match="precision='float16'"):
        spectrum(np.ones((2, 2)), precision="float16")
    with pytest.raises(ValueError, match="2-D matrix"):
        spectrum(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="one shape at a time"):
        spectra([np.ones((2, 2)), np.ones((3, 2))])


def test_batched_spectra_equal_one_by_one():
    mats = [_heavy_tailed((40, 70), seed) for seed in range(3)]
    for batched, w in zip(spectra(mats), mats):
        np.testing.assert_array_equal(batched, spectrum(w))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("tpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("make", [_gaussian, _heavy_tailed])
def test_cuda_spectra_match_reference(make):
    mats = [make((256, 512), seed) for seed in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = spectra(mats, device="cuda")
    for lam, w in zip(got, mats):
        ref = reference_spectrum(w)
        np.testing.assert_allclose(lam, ref, rtol=0, atol=5e-6 * ref.max())
        assert alpha_hill(lam) == pytest.approx(_hill_by_hand(ref), rel=1e-4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("shape", [(20, 30), (30, 20)])
def test_non_finite_weights_give_a_nan_spectrum(bad, shape):
    w = _gaussian(shape)
    w[3, 7] = bad
    good = _gaussian(shape, seed=1)
    lam_bad, lam_good = spectra([w, good])
    assert lam_bad.shape == (20,) and np.isnan(lam_bad).all()
    np.testing.assert_array_equal(lam_good, spectrum(good))


# -- dynamic range: planted outlier singular values ------------------------------


def _orthogonal(n, rng):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _planted(shape, eigenvalues, seed):
    """A float32 matrix whose squared singular values are ``eigenvalues``
    (up to the float32 rounding of its entries)."""
    rng = np.random.default_rng(seed)
    n = min(shape)
    u, v = _orthogonal(shape[0], rng)[:, :n], _orthogonal(shape[1], rng)[:, :n]
    return ((u * np.sqrt(eigenvalues)) @ v.T).astype(np.float32)


def _outlier_spectrum(n, ratio, n_outliers=4, seed=0):
    """A Marchenko-Pastur-like bulk with a few outliers at ``ratio`` times
    the median: what attention sinks and massive activations look like."""
    rng = np.random.default_rng(seed)
    bulk = np.sort(rng.chisquare(3.0, size=n))
    bulk[-n_outliers:] = ratio * np.median(bulk) * np.linspace(0.4, 1.0, n_outliers)
    return bulk


def _svd_reference(w):
    """Float64 SVD of the very matrix given (its float32 entries), squared."""
    return np.sort(np.linalg.svd(np.asarray(w, dtype=np.float64), compute_uv=False) ** 2)


@pytest.mark.parametrize("shape", [(256, 256), (896, 896), (384, 1024), (1024, 384)])
@pytest.mark.parametrize("ratio", [1e2, 1e3, 1e4, 1e5, 1e6])
def test_planted_outliers_keep_alpha_within_1e5(shape, ratio):
    w = _planted(shape, _outlier_spectrum(min(shape), ratio), seed=int(ratio) % 97)
    ref = _svd_reference(w)
    got = spectrum(w)
    assert got.dtype == np.float32
    assert alpha_hill(got) == pytest.approx(alpha_hill(ref), rel=1e-5)
    # x_min itself is what float64 resolves, not a float32 tolerance's zero.
    i = ref.size // 2
    assert got[i] == pytest.approx(ref[i], rel=1e-5)


def test_the_real_attention_case_gets_its_alpha():
    # The numbers of a real Qwen2 0.5B attention q (896 x 896, Q4_K_M GGUF):
    # lambda_max 544, median 0.031, smallest 9.5e-9.  float32's tolerance
    # eps * n * lambda_max = 0.058 is above the median.
    n = 896
    lam = np.concatenate([
        np.logspace(np.log10(9.5e-9), np.log10(0.031), n // 2, endpoint=False),
        np.linspace(0.031, 3.0, n // 2 - 4),
        [60.0, 140.0, 310.0, 544.0],
    ])
    w = _planted((n, n), lam, seed=5)
    ref = _svd_reference(w)
    assert ref[n // 2] < np.finfo(np.float32).eps * n * ref[-1]  # the trap
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectralWarning)  # no NaN, no warning
        got = alpha_hill(spectrum(w))
    assert got == pytest.approx(alpha_hill(ref), rel=1e-5)
    assert alpha_hill(spectrum(w, precision="float64")) == pytest.approx(alpha_hill(ref),
                                                                          rel=1e-9)


@pytest.mark.parametrize("rank, defined", [(40, False), (63, False), (64, True), (90, True)])
def test_nan_only_where_float64_rank_is_below_half(rank, defined):
    # A LoRA-like product B A of rank r in a 128 x 128 matrix: x_min is the
    # 64th eigenvalue, zero exactly when r < 64.
    rng = np.random.default_rng(rank)
    w = (rng.standard_normal((128, rank)) @ rng.standard_normal((rank, 128))).astype(np.float32)
    ref_alpha = alpha_hill(_svd_reference(w)) if defined else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SpectralWarning)
        got = alpha_hill(spectrum(w), name="delta")
    if defined:
        assert got == pytest.approx(ref_alpha, rel=1e-5) and not caught
    else:
        assert math.isnan(got) and "rank below N/2" in str(caught[0].message)


@pytest.mark.parametrize("shape", [(512, 512), (512, 1376), (1376, 512)])
def test_random_matrices_stay_in_float32(monkeypatch, shape):
    # Marchenko-Pastur spectra (the benchmark's 7B-shaped layers scaled
    # down) are far inside float32's range: the rule adds no float64 solve.
    import sklearn_specsig.spectral._solvers as spectral_module

    solved = []
    original = spectral_module._solve

    def counting(tensors, dtype, device):
        solved.append(dtype)
        return original(tensors, dtype, device)

    monkeypatch.setattr(spectral_module, "_solve", counting)
    spectra([_gaussian(shape, seed) for seed in range(3)])
    assert solved == [torch.float32]
