"""Fixtures shared by the test modules: small synthetic zoos, written once."""

import pytest
from hypothesis import settings

import sklearn_specsig.engine._solver as solver

# Property tests draw the same examples on every run and machine: a random
# seed or a replayed failure database would make a run depend on its past.
settings.register_profile("specsig", derandomize=True, database=None)
settings.load_profile("specsig")
from sklearn_specsig.datasets import make_model_zoo


@pytest.fixture(scope="session")
def small_zoo(tmp_path_factory):
    """Four families (llama, qwen2, mistral, gpt2), one base and two
    derived models each, six layers: real checkpoints on disk."""
    root = tmp_path_factory.mktemp("zoo")
    return make_model_zoo(
        root,
        n_families=4,
        n_derived=2,
        n_layers=6,
        architectures=("llama", "qwen2", "mistral", "gpt2"),
        random_state=0,
    )


@pytest.fixture(scope="session")
def family_zoo(tmp_path_factory):
    """Eight families, one base and three derived models each, eight
    layers, signed once for the session (``.Z``) through ``.store``."""
    from sklearn_specsig import SignatureStore, SpectralSignatureTransformer

    root = tmp_path_factory.mktemp("family-zoo")
    zoo = make_model_zoo(
        root, n_families=8, n_derived=3, n_layers=8, hidden_size=32, random_state=0
    )
    zoo.store = SignatureStore(root / "store")
    zoo.Z = SpectralSignatureTransformer(cache=zoo.store).fit_transform(zoo.paths)
    return zoo


@pytest.fixture(autouse=True)
def _isolated_default_cache(tmp_path_factory, monkeypatch):
    """cache="auto" must never write to the user's real cache from a test."""
    monkeypatch.setenv("SPECSIG_CACHE", str(tmp_path_factory.getbasetemp() / "auto-cache"))


@pytest.fixture
def count_solves(monkeypatch):
    """Count the matrices the engine actually decomposes."""
    calls = []
    real = solver.spectra

    def counting(matrices, **kwargs):
        calls.append(len(matrices))
        return real(matrices, **kwargs)

    monkeypatch.setattr(solver, "spectra", counting)
    return lambda: sum(calls)
