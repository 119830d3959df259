"""Part 2 of the bad-input contract: a batch survives its broken models.

With ``on_error="warn"`` a broken model gives a row of NaN and a warning
naming it; every other model is computed and cached, and a rerun after the
broken ones are repaired decomposes only what is missing.  Work finished
before a model fails half-way is kept in the store.
"""

import json
import os
import warnings

import numpy as np
import pytest
import torch
from _checkpoint_factories import N_LAYERS, llama_dir, llama_tensors, write_config
from safetensors.torch import save_file

from sklearn_specsig import (
    SignatureStore,
    SpectralSignatureTransformer,
    compute_signature,
)
from sklearn_specsig.architectures import ROLES
from sklearn_specsig.errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    SpecsigError,
    StoreError,
    UnsafeCheckpointError,
)

N_MATRICES = len(ROLES) * N_LAYERS


class _RunsCode:
    def __reduce__(self):
        return (os.getpid, ())


def _missing(path):
    pass


def _truncated(path):
    llama_dir(path, llama_tensors(seed=11))
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-100])


def _pickled_code(path):
    path.mkdir()
    torch.save({**llama_tensors(seed=12), "x": _RunsCode()}, path / "pytorch_model.bin")
    write_config(path, num_hidden_layers=N_LAYERS)


def _quantized(path):
    tensors = llama_tensors(seed=13)
    tensors["model.layers.1.mlp.down_proj.weight"] = tensors[
        "model.layers.1.mlp.down_proj.weight"
    ].to(torch.int8)
    llama_dir(path, tensors)


BROKEN = {
    "missing": (_missing, CheckpointNotFoundError, "no such file"),
    "truncated": (_truncated, CheckpointFormatError, "truncated"),
    "pickled": (_pickled_code, UnsafeCheckpointError, "safetensors"),
    "quantized": (_quantized, CheckpointFormatError, "not as floating point"),
}


def _batch(tmp_path):
    """Two good models around the broken ones, in one list."""
    good = [llama_dir(tmp_path / f"good{i}", llama_tensors(seed=i)) for i in range(2)]
    broken = []
    for name, (make, _, _) in BROKEN.items():
        make(tmp_path / name)
        broken.append(tmp_path / name)
    return good, broken, [good[0], *broken, good[1]]


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_broken_models_give_nan_rows_and_the_rest_is_computed_and_cached(
    tmp_path, n_jobs, count_solves
):
    good, broken, X = _batch(tmp_path)
    store = SignatureStore(tmp_path / "store")
    transformer = SpectralSignatureTransformer(cache=store, on_error="warn", n_jobs=n_jobs)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        Z = transformer.fit_transform(X)

    messages = [str(w.message) for w in record if issubclass(w.category, UserWarning)]
    for path, (_, error, fragment) in zip(broken, BROKEN.values()):
        about = [m for m in messages if m.startswith(f"{path}:")]
        assert len(about) == 1, (path, messages)
        assert fragment in about[0] and "Its row is NaN" in about[0]
    assert np.isnan(Z[1:-1]).all()
    for row, path in [(Z[0], good[0]), (Z[-1], good[1])]:
        expected = compute_signature(path, cache=None, progress=False).values.ravel()
        np.testing.assert_array_equal(row, expected)
    assert store.stats()["models"] == 2

    # Repair the broken models; the rerun decomposes only their matrices.
    for i, path in enumerate(broken):
        if path.exists():
            for file in path.iterdir():
                file.unlink()
        llama_dir(path, llama_tensors(seed=20 + i))
    n_before = count_solves()
    Z2 = SpectralSignatureTransformer(cache=store, on_error="warn").fit_transform(X)
    assert count_solves() - n_before == len(broken) * N_MATRICES
    assert np.isfinite(Z2).all()
    np.testing.assert_array_equal(Z2[[0, -1]], Z[[0, -1]])
    assert store.stats()["models"] == 2 + len(broken)


@pytest.mark.parametrize("name", list(BROKEN))
def test_on_error_raise_raises_the_documented_error(tmp_path, name):
    make, error, fragment = BROKEN[name]
    make(tmp_path / name)
    with pytest.raises(error, match=fragment) as info:
        SpectralSignatureTransformer(cache=None).fit([tmp_path / name])
    assert isinstance(info.value, SpecsigError)


def test_on_error_raise_keeps_the_models_signed_before_the_failure(tmp_path, count_solves):
    good, _, X = _batch(tmp_path)
    store = SignatureStore(tmp_path / "store")
    with pytest.raises(CheckpointNotFoundError):
        SpectralSignatureTransformer(cache=store).fit(X)
    assert store.stats()["models"] == 1
    n_before = count_solves()
    compute_signature(good[0], cache=store, progress=False)
    assert count_solves() == n_before


def test_all_models_broken_is_an_error(tmp_path):
    with (
        pytest.warns(UserWarning, match="no-such-model"),
        pytest.raises(ValueError, match="no model in X could be read"),
    ):
        SpectralSignatureTransformer(cache=None, on_error="warn").fit([tmp_path / "no-such-model"])


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_a_broken_store_raises_even_with_on_error_warn(tmp_path, n_jobs):
    # Not the models' fault: warn mode must not turn every model into a NaN
    # row with a "delete the store file" warning each.
    models = [llama_dir(tmp_path / f"m{i}", llama_tensors(seed=i)) for i in range(2)]
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "signatures.sqlite").write_bytes(b"not a database" * 100)
    transformer = SpectralSignatureTransformer(
        cache=tmp_path / "store", on_error="warn", n_jobs=n_jobs
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no per-model warning first
        with pytest.raises(StoreError, match="delete the file"):
            transformer.fit(models)


def test_work_done_before_a_mid_model_failure_is_kept(tmp_path, count_solves):
    # Two shards: layer 0 in the first, layer 1 (with an int8 matrix) in the
    # second. The engine fails on the int8 matrix, after layer 0 is solved.
    model = tmp_path / "sharded"
    model.mkdir()
    tensors = llama_tensors(seed=5)
    layer1 = {k: v for k, v in tensors.items() if ".layers.1." in k}
    layer0 = {k: v for k, v in tensors.items() if k not in layer1}
    bad_name = "model.layers.1.mlp.up_proj.weight"
    save_file(layer0, model / "model-00001-of-00002.safetensors")
    save_file({**layer1, bad_name: layer1[bad_name].to(torch.int8)},
              model / "model-00002-of-00002.safetensors")
    weight_map = {k: "model-00001-of-00002.safetensors" for k in layer0}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in layer1})
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    write_config(model, num_hidden_layers=N_LAYERS)

    store = SignatureStore(tmp_path / "store")
    with pytest.raises(CheckpointFormatError, match=bad_name):
        compute_signature(model, cache=store, progress=False)
    kept = store.stats()
    assert kept["models"] == 0
    assert len(ROLES) <= kept["spectra"] < N_MATRICES

    save_file(layer1, model / "model-00002-of-00002.safetensors")
    n_before = count_solves()
    sig = compute_signature(model, cache=store, progress=False)
    assert count_solves() - n_before == N_MATRICES - kept["spectra"]
    expected = compute_signature(model, cache=None, progress=False)
    np.testing.assert_array_equal(sig.values, expected.values)
