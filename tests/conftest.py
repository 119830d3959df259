"""Fixtures shared by the test modules: small synthetic zoos, written once."""

import pytest

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


@pytest.fixture(autouse=True)
def _isolated_default_cache(tmp_path_factory, monkeypatch):
    """cache="auto" must never write to the user's real cache from a test."""
    monkeypatch.setenv("SPECSIG_CACHE", str(tmp_path_factory.getbasetemp() / "auto-cache"))
