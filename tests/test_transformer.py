"""SpectralSignatureTransformer: the path-input transformer's API.

scikit-learn's estimator checks feed numeric arrays, which this transformer
does not take (its inputs are models), so the checks that apply are written
out here, as scikit-learn does for its text vectorizers.
"""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline

from sklearn_specsig import (
    SignatureStore,
    SpectralSignatureTransformer,
    compute_signature,
)
from sklearn_specsig.architectures import ROLES
from sklearn_specsig.signature import resample_depth


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return SignatureStore(tmp_path_factory.mktemp("transformer-cache"))


def test_fit_transform_is_the_flattened_signatures(small_zoo, store):
    sig = SpectralSignatureTransformer(cache=store)
    Z = sig.fit_transform(small_zoo.paths)
    assert Z.shape == (len(small_zoo.paths), 7 * 6)
    assert sig.n_layers_ == 6 and sig.n_features_out_ == 42
    for i in (0, 5):
        expected = compute_signature(small_zoo.paths[i], cache=None, progress=False).values
        np.testing.assert_array_equal(Z[i], expected.reshape(-1))
    names = sig.get_feature_names_out()
    assert names[0] == "q_000" and names[6] == "k_000" and names[-1] == "down_005"
    np.testing.assert_array_equal(sig.transform(small_zoo.paths[:2]), Z[:2])


def test_pandas_output_is_indexed_by_model_id(small_zoo, store):
    pytest.importorskip("pandas")
    sig = SpectralSignatureTransformer(cache=store).set_output(transform="pandas")
    df = sig.fit_transform(small_zoo.paths[:3])
    assert list(df.index) == small_zoo.paths[:3]
    assert df.index.name == "model"
    assert list(df.columns[:2]) == ["q_000", "q_001"]
    assert df.loc[small_zoo.paths[1], "o_003"] == SpectralSignatureTransformer(
        cache=store
    ).fit_transform(small_zoo.paths[:3])[1, ROLES.index("o") * 6 + 3]


def test_metric_and_resampling(small_zoo, store):
    sig = SpectralSignatureTransformer("log_norm", n_layers=11, cache=store)
    Z = sig.fit_transform(small_zoo.paths[:2])
    assert Z.shape == (2, 77)
    native = compute_signature(small_zoo.paths[0], "log_norm", cache=store, progress=False)
    np.testing.assert_allclose(Z[0], resample_depth(native.values, 11).reshape(-1))


def test_depth_mismatch_names_n_layers(small_zoo, tmp_path, store):
    from sklearn_specsig.datasets import make_model_zoo

    deeper = make_model_zoo(tmp_path, n_families=1, n_derived=0, n_layers=9, random_state=3)
    sig = SpectralSignatureTransformer(cache=store).fit(small_zoo.paths[:2])
    with pytest.raises(ValueError, match="n_layers=<int>"):
        sig.transform(deeper.paths)
    with pytest.raises(ValueError, match="different depths"):
        SpectralSignatureTransformer(cache=store).fit(small_zoo.paths[:1] + deeper.paths)
    Z = SpectralSignatureTransformer(n_layers=8, cache=store).fit_transform(
        small_zoo.paths[:1] + deeper.paths
    )
    assert Z.shape == (2, 56) and np.isfinite(Z).all()


def test_signature_objects_are_accepted(small_zoo, store):
    sig = compute_signature(small_zoo.paths[0], cache=store, progress=False)
    Z = SpectralSignatureTransformer("stable_rank", cache=None).fit_transform([sig])
    np.testing.assert_array_equal(Z[0], sig.with_metric("stable_rank").values.reshape(-1))


def test_parallel_equals_serial(small_zoo, tmp_path):
    paths = small_zoo.paths[:4]
    serial = SpectralSignatureTransformer(cache=None).fit_transform(paths)
    parallel = SpectralSignatureTransformer(cache=tmp_path, n_jobs=2).fit_transform(paths)
    # joblib workers run single-threaded BLAS, whose float32 rounding differs
    # from two threads' by a few ulps.
    np.testing.assert_allclose(parallel, serial, rtol=1e-5)
    assert SignatureStore(tmp_path).stats()["models"] == len(paths)


@pytest.mark.parametrize(
    "X, match",
    [
        ("model_dir", "single str"),
        ([], "empty"),
        (np.zeros((2, 3)), "1-D list"),
        ([3.0], "path, a hub id or a Signature"),
        (5, "list of models"),
    ],
)
def test_bad_inputs(X, match):
    with pytest.raises(ValueError, match=match):
        SpectralSignatureTransformer(cache=None).fit(X)


def test_bad_parameters():
    with pytest.raises(ValueError, match="metric"):
        SpectralSignatureTransformer("alpha").fit(["x"])
    with pytest.raises(ValueError, match="n_layers"):
        SpectralSignatureTransformer(n_layers=0).fit(["x"])
    with pytest.raises(ValueError, match="on_error"):
        SpectralSignatureTransformer(on_error="ignore").fit(["x"])


def test_on_error_warn_keeps_the_others(small_zoo, tmp_path, store):
    sig = SpectralSignatureTransformer(cache=store, on_error="warn")
    with pytest.warns(UserWarning, match="missing-model"):
        Z = sig.fit_transform([small_zoo.paths[0], str(tmp_path / "missing-model")])
    assert np.isfinite(Z[0]).all() and np.isnan(Z[1]).all()
    with pytest.raises(FileNotFoundError, match="missing-model"):
        SpectralSignatureTransformer(cache=store).fit([str(tmp_path / "missing-model")])


def test_sklearn_api_conventions(small_zoo, store):
    est = SpectralSignatureTransformer("log_norm", n_layers=4, cache=store, n_jobs=1)
    cloned = clone(est)
    assert cloned.get_params() == est.get_params()
    assert cloned.set_params(metric="alpha_hill").metric == "alpha_hill"
    with pytest.raises(Exception, match="not fitted"):
        est.transform(small_zoo.paths[:1])
    est.fit(small_zoo.paths[:2])
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(
        restored.transform(small_zoo.paths[:2]), est.transform(small_zoo.paths[:2])
    )
    tags = est.__sklearn_tags__()
    assert tags.input_tags.string and not tags.input_tags.two_d_array


def test_pipeline_cross_validation_and_grid_search(small_zoo, store):
    # GPT-2 has no gate row (NaN), which KNeighborsClassifier refuses.
    keep = ["gpt2" not in p for p in small_zoo.paths]
    X, y = list(np.asarray(small_zoo.paths)[keep]), small_zoo.labels[keep]
    pipe = make_pipeline(
        SpectralSignatureTransformer(cache=store), KNeighborsClassifier(n_neighbors=1)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() == 1.0  # derived models sit next to their family
    grid = GridSearchCV(
        pipe,
        {"spectralsignaturetransformer__metric": ["alpha_hill", "log_norm"]},
        cv=3,
        n_jobs=2,
    ).fit(X, y)
    assert grid.best_score_ == 1.0
    assert set(grid.cv_results_["param_spectralsignaturetransformer__metric"]) == {
        "alpha_hill",
        "log_norm",
    }


# -- validation at the boundary (issue 12) ------------------------------------------


@pytest.fixture
def count_reads(monkeypatch):
    """Count the checkpoints the engine starts to read."""
    from sklearn_specsig.engine import _extract

    calls = []
    real = _extract.locate_checkpoint

    def counting(source, **kwargs):
        calls.append(source)
        return real(source, **kwargs)

    monkeypatch.setattr(_extract, "locate_checkpoint", counting)
    return calls


def test_a_bad_device_is_one_error_before_any_read(small_zoo, count_reads, count_solves):
    sig = SpectralSignatureTransformer(device="gpu", on_error="warn", cache=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a warning (and a NaN row) per model
        with pytest.raises(ValueError, match="device='gpu' is not a device"):
            sig.fit(small_zoo.paths)
    assert count_reads == [] and count_solves() == 0
    assert not hasattr(sig, "n_layers_")


def test_a_cuda_transformer_unpickled_without_cuda(small_zoo, store, monkeypatch,
                                                   count_reads):
    import torch

    sig = SpectralSignatureTransformer(cache=store).fit(small_zoo.paths[:2])
    sig.device = "cuda"  # as if fitted on a GPU machine
    restored = pickle.loads(pickle.dumps(sig))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    count_reads.clear()
    with pytest.raises(ValueError, match="no CUDA GPU"):
        restored.transform(small_zoo.paths[:2])
    assert count_reads == []


def test_transform_raises_when_every_model_fails(small_zoo, tmp_path, store):
    sig = SpectralSignatureTransformer(cache=store, on_error="warn").fit(small_zoo.paths[:2])
    missing = [str(tmp_path / "missing-a"), str(tmp_path / "missing-b")]
    with pytest.warns(UserWarning, match="missing-") as record:
        with pytest.raises(ValueError, match="no model in X could be read"):
            sig.transform(missing)
    assert len(record) == 2  # one warning per model, then the error


def test_failed_models_keep_nan_rows_when_resampled(small_zoo, tmp_path, store):
    # The NaN row of a failed model survives the one profile coercion.
    sig = SpectralSignatureTransformer(n_layers=3, cache=store, on_error="warn")
    with pytest.warns(UserWarning, match="missing-model"):
        Z = sig.fit_transform([str(tmp_path / "missing-model"), small_zoo.paths[1]])
    assert Z.shape == (2, 21) and np.isnan(Z[0]).all() and np.isfinite(Z[1]).all()


def test_different_depths_is_the_one_message(small_zoo, tmp_path, store):
    from sklearn_specsig.datasets import make_model_zoo

    deeper = make_model_zoo(tmp_path, n_families=1, n_derived=0, n_layers=9, random_state=3)
    expected = ("the signatures have different depths [6, 9]; set n_layers=<int> to "
                "resample them onto a common relative-depth grid.")
    with pytest.raises(ValueError) as info:
        SpectralSignatureTransformer(cache=store).fit(small_zoo.paths[:1] + deeper.paths)
    assert str(info.value) == expected


def test_the_transformer_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys, pickle\n"
            "from sklearn_specsig import SpectralSignatureTransformer\n"
            "pickle.loads(pickle.dumps(SpectralSignatureTransformer(device='cpu')))\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def lora_pair(tmp_path_factory):
    """A tiny llama and two LoRA adapters of it (written by peft) that do
    not record their base (base_model_name_or_path is None)."""
    import json

    from _transformers_factories import write_tiny_checkpoint

    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("transformer-lora")
    write_tiny_checkpoint("llama", folder / "base")
    adapters = []
    for seed in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = transformers.AutoModelForCausalLM.from_pretrained(folder / "base")
            torch.manual_seed(seed)
            peft.get_peft_model(model, peft.LoraConfig(
                r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                init_lora_weights=False)).save_pretrained(folder / f"adapter-{seed}")
        config_file = folder / f"adapter-{seed}" / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config_file.write_text(json.dumps({**config, "base_model_name_or_path": None}))
        adapters.append(folder / f"adapter-{seed}")
    return folder / "base", adapters


def test_base_signs_a_list_of_adapters(lora_pair):
    base, adapters = lora_pair
    sig = SpectralSignatureTransformer(cache=None, base=base)
    assert sig.base is base and sig.get_params()["base"] is base
    Z = sig.fit_transform(adapters)
    expected = [compute_signature(a, base=base, cache=None, progress=False).values.ravel()
                for a in adapters]
    np.testing.assert_array_equal(Z, np.stack(expected))
    assert not np.array_equal(Z[0], Z[1])
    np.testing.assert_array_equal(sig.transform([adapters[1]]), Z[1:])
    np.testing.assert_array_equal(clone(sig).set_params(base=str(base)).fit_transform(
        adapters), Z)
    # Without base= the adapters name no base.
    with pytest.raises(FileNotFoundError, match="names no base model.*base="):
        SpectralSignatureTransformer(cache=None).fit(adapters)


def test_base_with_a_full_model_names_it(lora_pair):
    base, adapters = lora_pair
    import re

    with pytest.raises(ValueError, match=f"base=.*'{re.escape(str(base))}' is not a PEFT"):
        SpectralSignatureTransformer(cache=None, base=base).fit([adapters[0], base])
    sig = SpectralSignatureTransformer(cache=None, base=base, on_error="warn")
    with pytest.warns(UserWarning, match=f"{re.escape(str(base))}: .*not a PEFT.*row is NaN"):
        Z = sig.fit_transform([adapters[0], str(base)])
    assert np.isfinite(Z[0]).all() and np.isnan(Z[1]).all()

    from safetensors.torch import load_file

    weights = load_file(base / "model.safetensors")
    with pytest.raises(ValueError, match="state dict of .* in memory.*base=.*in memory"):
        SpectralSignatureTransformer(cache=None, base=base).fit([adapters[0], weights])
    with pytest.raises(ValueError, match="base"):
        SpectralSignatureTransformer(cache=None, base=3).fit(adapters)
