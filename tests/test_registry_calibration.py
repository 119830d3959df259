"""Calibration of ModelIndex's p-values on synthetic zoos of independent families.

What is checked, against expectations computed here without the registry:

(a) resolution: a registry of 20 families has ``n_cross = (N**2 - sum n_f**2) / 2``
    cross-family pairs, its smallest p-value is ``1 / (1 + n_cross)`` (<= 0.001
    once the families have >= 3 models), and a derivative whose similarity is
    above every null pair gets exactly that p-value (and its Sidak correction);
(b) calibration: for queries from families that are *not* in the registry, the
    verdict p-values are uniform (Kolmogorov-Smirnov over 300 queries, ten
    independent registries) and a false verdict (p < alpha) is as rare as alpha;
(c) power: derivatives of recorded families get p < 0.01 in >= 95% of queries,
    with the right family.

The zoos are the library's own recipe (:func:`make_model_zoo`).  Every family
is one call with its own seed, so families are drawn independently of one
another (a multi-family ``make_model_zoo`` redraws a family too close to an
earlier one: a fresh family would then not be exchangeable with the recorded
ones, and the null would be biased).  (a) and (c) record and query real
checkpoints, signed through the registry; (b) needs thousands of models, so it
uses :func:`twin_family`, the same recipe carried out on arrays (same random
draws, eigenvalues by SVD), checked against signed checkpoints below.
"""

import numpy as np
import pytest
from scipy.stats import binom, kstest, rankdata

from sklearn_specsig import _zoo_spectra as zs
from sklearn_specsig.datasets import _extra_tensors, _role_shapes, _sizes, make_model_zoo
from sklearn_specsig.registry import ModelIndex

ROLES = ("q", "k", "v", "o", "gate", "up", "down")
ARCHS = ("llama", "qwen2", "mistral", "gpt2")  # make_model_zoo's default cycle
N_LAYERS = 8
HIDDEN = 16
N_FAMILIES = 20
N_RECORDED = 4  # base + 3 fine-tunes recorded per family
N_HELD_OUT = 5  # further fine-tunes per family, queried as derivatives
ALPHA = 0.01


def sidak(p, k):
    return 1.0 - (1.0 - p) ** k


# -- an independent similarity and null --------------------------------------


def similarity_matrix(A, B):
    """Paper Eq. 2 written out again: mean over the module rows finite in both
    of the Spearman correlation of the depth profiles (numpy + rankdata)."""
    def unit_ranks(P):
        R = rankdata(P, axis=2)
        R = R - R.mean(axis=2, keepdims=True)
        norms = np.linalg.norm(R, axis=2, keepdims=True)
        ok = np.isfinite(P).all(axis=2) & (norms[..., 0] > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            U = np.where(ok[..., None], R / norms, 0.0)
        return U, ok.astype(float)

    UA, okA = unit_ranks(np.asarray(A, dtype=float))
    UB, okB = unit_ranks(np.asarray(B, dtype=float))
    total = np.einsum("amk,bmk->ab", UA, UB)
    return total / (okA @ okB.T)


def cross_family_null(P, families):
    """Similarities of every pair of recorded models of different families."""
    S = similarity_matrix(P, P)
    fam = np.asarray(families)
    i, j = np.triu_indices(len(P), 1)
    return np.sort(S[i, j][fam[i] != fam[j]])


# -- the zoo ------------------------------------------------------------------


def zoo_family(root, seed, arch, n_derived):
    """One family of real checkpoints: base + ``n_derived`` fine-tunes."""
    return make_model_zoo(root / f"family-{seed}", n_families=1, n_derived=n_derived,
                          n_layers=N_LAYERS, hidden_size=HIDDEN, architectures=(arch,),
                          random_state=seed)


def twin_family(seed, n_members, arch):
    """Signatures (n_members, 7, N_LAYERS) of ``zoo_family(seed, arch,
    n_members - 1)``'s models, base first, computed on arrays: the same draws
    as ``make_model_zoo`` (family profile, base matrices, the family's other
    tensors, then one edit per fine-tune), float32 storage, Hill alpha of the
    squared singular values (a base alone: its target alphas)."""
    rng = np.random.RandomState(seed)
    target = zs.draw_family_profiles(1, N_LAYERS, rng)[0]
    if arch == "gpt2":
        target[ROLES.index("gate")] = np.nan  # GPT-2 has no gate matrix
    if n_members == 1:  # a base alone: its alphas are the target (make_model_zoo's Notes)
        return target[None]
    frng = np.random.RandomState(rng.randint(np.iinfo(np.int32).max, size=1)[0])
    sizes = _sizes(arch, HIDDEN)
    shapes = _role_shapes(arch, sizes)
    base = [{r: zs.base_matrix(*shape, target[ROLES.index(r), n], frng)
             for r, shape in shapes.items()} for n in range(N_LAYERS)]
    _extra_tensors(arch, sizes, N_LAYERS, frng)  # drawn between the base and the edits
    out = np.full((n_members, len(ROLES), N_LAYERS), np.nan)
    for k in range(n_members):
        edit = zs.draw_edit(frng) if k else None
        mats = [{r: w if edit is None else zs.apply_edit(w, edit, frng) for r, w in layer.items()}
                for layer in base]
        for r in shapes:  # one batched SVD per role, over the layers
            w = np.stack([layer[r] for layer in mats]).astype(np.float32).astype(np.float64)
            lam = np.linalg.svd(w, compute_uv=False) ** 2
            out[k, ROLES.index(r)] = [zs.hill_alpha(x) for x in lam]
    return out


def test_twin_family_is_the_signed_checkpoints(tmp_path):
    """The array twin of (b) gives the signatures the registry records for the
    same checkpoints, for a gated and a GPT-2 (no gate) family."""
    index = ModelIndex(tmp_path / "registry")
    for seed, arch in ((11, "qwen2"), (12, "gpt2")):
        zoo = zoo_family(tmp_path, seed, arch, n_derived=2)
        names = [f"{seed}-{k}" for k in range(3)]
        index.add(zoo.paths, names=names, families=str(seed))
        X, recorded, _ = index.signatures()
        got = X[[recorded.index(n) for n in names]].reshape(3, len(ROLES), N_LAYERS)
        want = twin_family(seed, 3, arch)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, equal_nan=True)
        np.testing.assert_allclose(got[0], twin_family(seed, 1, arch)[0], rtol=0, atol=1e-4)
        # The fine-tunes really moved: the twin is not just the base repeated.
        assert np.nanmax(np.abs(want[1:] - want[0])) > 0.01


# -- (a) and (c): a registry of 20 families of real checkpoints --------------


@pytest.fixture(scope="module")
def registry20(tmp_path_factory):
    """20 independent families, base + 3 fine-tunes recorded from checkpoints;
    5 more fine-tunes per family kept back as derivative queries."""
    root = tmp_path_factory.mktemp("calibration-zoo")
    index = ModelIndex(root / "registry.sqlite")
    recorded, families, held_out, held_family = [], [], [], []
    for f in range(N_FAMILIES):
        zoo = zoo_family(root, 500_000 + f, ARCHS[f % len(ARCHS)], N_RECORDED + N_HELD_OUT - 1)
        family = f"family{f:02d}"
        recorded += zoo.paths[:N_RECORDED]
        families += [family] * N_RECORDED
        held_out += zoo.paths[N_RECORDED:]
        held_family += [family] * N_HELD_OUT
    names = [f"{fam}-{i % N_RECORDED}" for i, fam in enumerate(families)]
    index.add(recorded, names=names, families=families)
    answers = index.query(held_out, names=[f"q{i}" for i in range(len(held_out))], top=3)
    return index, answers, np.array(held_family)


def test_twenty_families_resolve_p_values_below_0_001(registry20):
    index, _, _ = registry20
    X, _, families = index.signatures()
    sizes = np.unique(families, return_counts=True)[1]
    assert len(sizes) == N_FAMILIES and (sizes == N_RECORDED).all()
    n = sizes.sum()
    n_cross = (n * n - (sizes**2).sum()) // 2  # 80 models: (6400 - 320) / 2
    assert n_cross == 3040

    summary = index.summary()
    assert summary["n_families"] == N_FAMILIES
    assert summary["n_cross_family_pairs"] == n_cross
    assert summary["null_method"] == "exact" and summary["n_null"] == n_cross
    assert summary["smallest_p_value"] == pytest.approx(1 / 3041, rel=1e-12)
    assert summary["smallest_p_value"] <= 0.001
    assert summary["smallest_verdict_p_value"] == pytest.approx(sidak(1 / 3041, 20), rel=1e-9)
    # 20 families of 4 models can name a family at alpha = 0.01 at all.
    assert summary["smallest_verdict_p_value"] < ALPHA


def test_derivative_above_every_null_pair_gets_the_smallest_p_value(registry20):
    index, answers, held_family = registry20
    X, _, families = index.signatures()
    null = cross_family_null(X.reshape(len(X), len(ROLES), N_LAYERS), families)
    assert null.size == 3040
    top = np.array([a["neighbours"][0]["similarity"] for a in answers])
    above = top > null[-1] + 1e-9
    assert above.sum() >= 95  # (all 100 do: top similarity >= 0.87, null max 0.65)
    for answer, is_above in zip(answers, above):
        best = answer["neighbours"][0]
        if is_above:
            assert best["p_value"] == pytest.approx(1 / 3041, rel=1e-12)
            assert answer["verdict"]["p_value"] == pytest.approx(sidak(1 / 3041, 20), rel=1e-9)
        # Every neighbour's p-value is the empirical one against our own null
        # (a band for similarities within rounding of a tied null value).
        for nb in answer["neighbours"]:
            s = nb["similarity"]
            lo = (1 + null.size - np.searchsorted(null, s + 1e-9, "left")) / (1 + null.size)
            hi = (1 + null.size - np.searchsorted(null, s - 1e-9, "left")) / (1 + null.size)
            assert lo - 1e-15 <= nb["p_value"] <= hi + 1e-15


@pytest.mark.parametrize("family_size", [1, 2, 3])
def test_smallest_p_value_with_twenty_families_of_any_size(tmp_path, family_size):
    """The resolution rule for any registry of 20 families: 1 / (1 + n_cross).
    It reaches 0.001 from 3 models a family on (n_cross >= 999); 20 single
    models (190 pairs, 1/191) or pairs (760, 1/761) cannot, and the registry
    says so rather than extrapolating below what its null resolves."""
    rng = np.random.default_rng(family_size)
    base = rng.normal(size=(N_FAMILIES, len(ROLES), N_LAYERS))
    X = np.concatenate([base + 0.01 * k * rng.normal(size=base.shape)
                        for k in range(family_size)])
    families = [f"f{f}" for f in range(N_FAMILIES)] * family_size
    index = ModelIndex(tmp_path)
    index.add(X, names=[f"m{i}" for i in range(len(X))], families=families)
    n = N_FAMILIES * family_size
    n_cross = (n * n - N_FAMILIES * family_size**2) // 2
    summary = index.summary()
    assert summary["smallest_p_value"] == pytest.approx(1 / (1 + n_cross), rel=1e-12)
    assert (summary["smallest_p_value"] <= 0.001) == (n_cross >= 999)
    assert n_cross == {1: 190, 2: 760, 3: 1710}[family_size]


def test_derivatives_of_recorded_families_are_named_at_p_below_0_01(registry20):
    _, answers, held_family = registry20
    assert len(answers) == N_FAMILIES * N_HELD_OUT  # 100 derivative queries
    p = np.array([a["verdict"]["p_value"] for a in answers])
    named = np.array([a["verdict"]["family"] for a in answers], dtype=object)
    top_family = np.array([a["neighbours"][0]["family"] for a in answers])
    assert (top_family == held_family).all()
    assert np.mean(p < ALPHA) >= 0.95, f"only {np.mean(p < ALPHA):.2%} with p < {ALPHA}"
    significant = p < ALPHA
    assert (named[significant] == held_family[significant]).all()
    assert all(f is None for f in named[~significant])


# -- (b): queries from families absent from the registry ----------------------


N_REGISTRIES = 10
N_QUERIES = 30  # per registry: 300 out-of-registry queries in all


@pytest.fixture(scope="module")
def unrelated_verdicts(tmp_path_factory):
    """Verdict p-values of 300 queries, each from its own new family (a base
    or a fine-tune), against ten independent registries of 20 families
    (base + 3 fine-tunes each, architectures cycling as in make_model_zoo)."""
    root = tmp_path_factory.mktemp("calibration-registries")
    p, named = [], []
    for r in range(N_REGISTRIES):
        X = np.concatenate([twin_family(1000 * r + f, N_RECORDED, ARCHS[f % len(ARCHS)])
                            for f in range(N_FAMILIES)])
        families = np.repeat([f"family{f:02d}" for f in range(N_FAMILIES)], N_RECORDED)
        index = ModelIndex(root / f"registry{r}.sqlite")
        index.add(X, names=[f"m{i}" for i in range(len(X))], families=list(families))
        queries = [twin_family(100_000 + 1000 * r + q, 1 + q % 2, ARCHS[q % len(ARCHS)])[-1]
                   for q in range(N_QUERIES)]
        for answer in index.query(queries, top=1, names=[f"q{q}" for q in range(N_QUERIES)]):
            p.append(answer["verdict"]["p_value"])
            named.append(answer["verdict"]["family"])
    return np.array(p), named


def test_verdict_p_values_of_unrelated_families_are_uniform(unrelated_verdicts):
    p, _ = unrelated_verdicts
    assert p.size == N_REGISTRIES * N_QUERIES >= 100
    assert ((p > 0) & (p <= 1)).all()
    ks = kstest(p, "uniform")
    deciles = np.histogram(p, bins=np.linspace(0, 1, 11))[0].tolist()
    assert ks.pvalue > 0.01, (
        f"verdict p-values of {p.size} out-of-registry queries are not uniform: "
        f"KS D={ks.statistic:.3f}, p={ks.pvalue:.2g}; deciles {deciles}; "
        f"P(p<=0.01)={np.mean(p <= 0.01):.3f}, P(p<=0.05)={np.mean(p <= 0.05):.3f}")


def test_false_verdicts_on_unrelated_families_are_as_rare_as_alpha(unrelated_verdicts):
    """A level-alpha test: unrelated queries named a family no more often than
    a Binomial(300, 0.01) allows (its 0.999 quantile: 10 of 300)."""
    p, named = unrelated_verdicts
    n_named = sum(f is not None for f in named)
    assert n_named == int(np.sum(p < ALPHA))
    bound = int(binom.ppf(0.999, p.size, ALPHA))
    assert n_named <= bound, (
        f"{n_named} of {p.size} queries from families absent from the registry were "
        f"named a family at alpha={ALPHA} (expected ~{ALPHA * p.size:.0f}, bound {bound})")
