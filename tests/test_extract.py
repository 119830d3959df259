"""compute_signature end to end: streaming, the store, invariances."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr

import sklearn_specsig.engine._extract as extract
from sklearn_specsig import SignatureStore, compute_signature
from sklearn_specsig.architectures import ROLES
from sklearn_specsig.errors import CheckpointNotFoundError, SpectralWarning
from sklearn_specsig.spectral import alpha_hill, reference_spectrum


def _rewrite(src, dst, edit):
    """Copy a checkpoint directory, passing its tensors through ``edit``."""
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    tensors = load_file(src / "model.safetensors")
    save_file({k: v.contiguous() for k, v in edit(tensors).items()}, dst / "model.safetensors")
    return dst


def test_signature_matches_float64_reference_per_matrix(small_zoo):
    path = small_zoo.paths[0]
    sig = compute_signature(path, cache=None, progress=False)
    tensors = load_file(f"{path}/model.safetensors")
    assert sig.architecture == "llama" and sig.n_layers == 6 and sig.roles == ROLES
    for layer in (0, 5):
        for role, suffix in [("q", "self_attn.q_proj"), ("k", "self_attn.k_proj"),
                             ("down", "mlp.down_proj")]:
            w = tensors[f"model.layers.{layer}.{suffix}.weight"]
            expected = alpha_hill(reference_spectrum(w))
            assert sig.values[ROLES.index(role), layer] == pytest.approx(expected, rel=1e-4)
    assert len(sig.spectra) == 7 * 6
    assert np.isfinite(sig.values).all()


def test_gpt2_has_a_nan_gate_row(small_zoo):
    gpt2 = [p for p, lab in zip(small_zoo.paths, small_zoo.labels) if "gpt2" in p][0]
    sig = compute_signature(gpt2, cache=None, progress=False)
    assert sig.architecture == "gpt2"
    assert np.isnan(sig.values[ROLES.index("gate")]).all()
    assert np.isfinite(np.delete(sig.values, ROLES.index("gate"), axis=0)).all()


def test_output_invariant_reparameterisations_keep_the_signature(small_zoo, tmp_path):
    # Paper appendix 7.6: Q*a, K/a, V*b, O/b per layer, and a permutation of
    # the MLP hidden units (P gate, P up, down P^T) leave the model's
    # function unchanged, and must leave its signature unchanged.
    src = small_zoo.paths[0]
    rng = np.random.default_rng(0)

    def reparameterise(t):
        out = dict(t)
        for layer in range(6):
            p = f"model.layers.{layer}."
            a, b = np.exp(rng.normal(size=2))
            out[p + "self_attn.q_proj.weight"] = t[p + "self_attn.q_proj.weight"] * a
            out[p + "self_attn.k_proj.weight"] = t[p + "self_attn.k_proj.weight"] / a
            out[p + "self_attn.v_proj.weight"] = t[p + "self_attn.v_proj.weight"] * b
            # O acts on V's output: scaling its input columns undoes V*b
            out[p + "self_attn.o_proj.weight"] = t[p + "self_attn.o_proj.weight"] / b
            perm = torch.from_numpy(rng.permutation(t[p + "mlp.up_proj.weight"].shape[0]))
            out[p + "mlp.gate_proj.weight"] = t[p + "mlp.gate_proj.weight"][perm]
            out[p + "mlp.up_proj.weight"] = t[p + "mlp.up_proj.weight"][perm]
            out[p + "mlp.down_proj.weight"] = t[p + "mlp.down_proj.weight"][:, perm]
        return out

    dst = _rewrite(__import__("pathlib").Path(src), tmp_path / "reparam", reparameterise)
    before = compute_signature(src, cache=None, progress=False)
    after = compute_signature(dst, cache=None, progress=False)
    assert before.fingerprint != after.fingerprint
    np.testing.assert_allclose(after.values, before.values, rtol=1e-5)
    for row_before, row_after in zip(before.values, after.values):
        assert spearmanr(row_before, row_after).statistic == 1.0
    # while a scale metric moves
    assert not np.allclose(after.with_metric("log_norm").values, before.with_metric("log_norm").values)


def test_the_store_is_content_addressed(small_zoo, tmp_path, count_solves):
    src = __import__("pathlib").Path(small_zoo.paths[1])
    store = SignatureStore(tmp_path / "cache")
    first = compute_signature(src, cache=store, progress=False)
    assert count_solves() == 42

    # Same files again: answered from the source memo, nothing solved.
    again = compute_signature(src, cache=store, progress=False)
    assert count_solves() == 42
    np.testing.assert_array_equal(again.values, first.values)
    assert again.fingerprint == first.fingerprint

    # A copy elsewhere is read again but hits every spectrum.
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    copied = compute_signature(copy, cache=store, progress=False)
    assert count_solves() == 42 and copied.fingerprint == first.fingerprint
    np.testing.assert_array_equal(copied.values, first.values)

    # One matrix modified in place: that matrix alone is solved again.
    def edit(t):
        name = "model.layers.2.mlp.up_proj.weight"
        return {**t, name: t[name] * 1.5 + 0.01}

    tmp = _rewrite(copy, tmp_path / "edited", edit)
    shutil.copy(tmp / "model.safetensors", copy / "model.safetensors")
    edited = compute_signature(copy, cache=store, progress=False)
    assert count_solves() == 43
    assert edited.fingerprint != first.fingerprint
    changed = ~np.isclose(edited.values, first.values)
    assert changed.sum() == 1 and changed[ROLES.index("up"), 2]

    # Another precision is another cache entry.
    compute_signature(src, cache=store, precision="float64", progress=False)
    assert count_solves() == 85
    assert store.stats()["models"] == 3


def test_cache_none_writes_nothing_and_auto_uses_the_env(small_zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECSIG_CACHE", str(tmp_path / "auto"))
    compute_signature(small_zoo.paths[2], cache=None, progress=False)
    assert not (tmp_path / "auto").exists()
    compute_signature(small_zoo.paths[2], progress=False)
    assert SignatureStore(tmp_path / "auto").stats()["models"] == 1


def test_non_finite_weights_warn_and_give_nan(small_zoo, tmp_path):
    src = __import__("pathlib").Path(small_zoo.paths[0])
    name = "model.layers.3.self_attn.v_proj.weight"

    def poison(t):
        w = t[name].clone()
        w[0, 0] = float("nan")
        return {**t, name: w}

    dst = _rewrite(src, tmp_path / "nan", poison)
    with pytest.warns(SpectralWarning, match=name.replace(".", r"\.")):
        sig = compute_signature(dst, cache=tmp_path / "c", progress=False)
    assert np.isnan(sig.values[ROLES.index("v"), 3])
    assert np.isfinite(np.delete(sig.values.ravel(), ROLES.index("v") * 6 + 3)).all()


def test_reader_errors_propagate_from_the_prefetch_thread(small_zoo, monkeypatch):
    from sklearn_specsig.checkpoints import Checkpoint

    def broken(self, names=None):
        yield from []
        raise OSError("disk went away")

    reader = type(extract.locate_checkpoint(small_zoo.paths[0]).open())
    assert issubclass(reader, Checkpoint)
    monkeypatch.setattr(reader, "iter_tensors", broken)
    with pytest.raises(OSError, match="disk went away"):
        compute_signature(small_zoo.paths[0], cache=None, progress=False)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="nowhere"):
        compute_signature(tmp_path / "nowhere", cache=None, progress=False)


def test_bfloat16_checkpoint_matches_float32_copy(tmp_path):
    from sklearn_specsig.datasets import make_model_zoo

    z32 = make_model_zoo(tmp_path / "a", n_families=1, n_derived=0, n_layers=3, random_state=1)
    z16 = make_model_zoo(tmp_path / "b", n_families=1, n_derived=0, n_layers=3,
                         dtype="bfloat16", random_state=1)
    s32 = compute_signature(z32.paths[0], cache=None, progress=False)
    s16 = compute_signature(z16.paths[0], cache=None, progress=False)
    # bf16 keeps 8 bits of mantissa: alpha moves a little, the ranks do not
    np.testing.assert_allclose(s16.values, s32.values, rtol=0.05)
    assert json.loads((__import__("pathlib").Path(z16.paths[0]) / "config.json").read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_signature_equals_cpu_signature(small_zoo):
    cpu = compute_signature(small_zoo.paths[0], device="cpu", cache=None, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpu = compute_signature(small_zoo.paths[0], device="cuda", cache=None, progress=False)
    np.testing.assert_allclose(gpu.values, cpu.values, rtol=1e-4)


# -- a full cache hit parses nothing -------------------------------------------


def _formats(tmp_path):
    """One small Llama model in each on-disk format the library reads."""
    import torch

    from tests._checkpoint_factories import llama_dir, llama_tensors, write_gguf, write_sharded

    tensors = llama_tensors(n_layers=3)
    config = {"num_hidden_layers": 3, "hidden_size": 8}
    single = llama_dir(tmp_path / "single", tensors, num_hidden_layers=3)
    sharded = tmp_path / "sharded"
    write_sharded(sharded, tensors, 2)
    (sharded / "config.json").write_text(json.dumps(config))
    pt = tmp_path / "bin"
    pt.mkdir()
    torch.save(tensors, pt / "pytorch_model.bin")
    (pt / "config.json").write_text(json.dumps(config))
    gguf_names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                  "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                  "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                  "mlp.down_proj": "ffn_down"}
    gguf_tensors = {}
    for name, t in tensors.items():
        parts = name.split(".")
        if parts[1] == "layers":
            gname = f"blk.{parts[2]}.{gguf_names['.'.join(parts[3:5])]}.weight"
            gguf_tensors[gname] = (t.numpy(), None)
    gguf_file = write_gguf(tmp_path / "model.gguf", gguf_tensors, metadata={"block_count": 3})
    return {"safetensors": single, "sharded": sharded, "bin": pt, "gguf": gguf_file}


def test_a_full_hit_opens_no_weight_file(tmp_path, monkeypatch, count_solves):
    from sklearn_specsig.checkpoints import CheckpointLocation

    store = SignatureStore(tmp_path / "cache")
    models = _formats(tmp_path)
    cold = {k: compute_signature(p, cache=store, progress=False) for k, p in models.items()}
    assert count_solves() == 21  # one content in four formats: content-addressed
    assert all(np.isfinite(sig.values).all() for sig in cold.values())

    def no_parsing(self):
        raise AssertionError(f"{self.source} was opened on a full cache hit")

    monkeypatch.setattr(CheckpointLocation, "open", no_parsing)
    for kind, path in models.items():
        warm = compute_signature(path, cache=store, progress=False)
        np.testing.assert_array_equal(warm.values, cold[kind].values)
        assert warm.fingerprint == cold[kind].fingerprint
        assert warm.architecture == cold[kind].architecture
        # The same tensors under the same names share one manifest (the
        # fingerprint is their content): its order is the last writer's.
        assert set(warm.entries) == set(cold[kind].entries)
        assert warm.spectra.keys() == cold[kind].spectra.keys()
    assert count_solves() == 21


def test_the_quick_memo_misses_when_files_schemes_or_code_change(
        tmp_path, monkeypatch, count_solves):
    import os

    from sklearn_specsig.architectures import get_naming_scheme, naming_scheme_context
    from sklearn_specsig.checkpoints import CheckpointLocation

    store = SignatureStore(tmp_path / "cache")
    model = _formats(tmp_path)["sharded"]
    first = compute_signature(model, cache=store, progress=False)
    opened = []
    real_open = CheckpointLocation.open
    monkeypatch.setattr(CheckpointLocation, "open",
                        lambda self: opened.append(self.source) or real_open(self))

    # A shard touched (same bytes, new mtime): a miss, read again, and the
    # content-addressed spectra make it cost no solve.
    shard = sorted(model.glob("*.safetensors"))[1]
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = compute_signature(model, cache=store, progress=False)
    assert len(opened) == 1 and count_solves() == 21
    np.testing.assert_array_equal(again.values, first.values)
    compute_signature(model, cache=store, progress=False)
    assert len(opened) == 1  # the new stats are remembered

    # A custom scheme in force: the mapping may differ, so it is a miss.
    llama = get_naming_scheme("llama")
    # A deliberately partial signature says so: the other matrices are skipped.
    custom = type(llama)(name="llama_q_only", layer_pattern=llama.layer_pattern,
                         modules={"self_attn.q_proj.weight": "q"},
                         skip=(r"self_attn\.[kvo]_proj\.weight", r"mlp\.(?:gate|up|down)_proj\.weight"))
    forced = compute_signature(model, cache=store, progress=False, scheme=custom)
    assert len(opened) == 2
    assert np.isnan(forced.values[1:]).all() and np.isfinite(forced.values[0]).all()
    with naming_scheme_context(custom):
        compute_signature(model, cache=store, progress=False)
    assert len(opened) == 3
    compute_signature(model, cache=store, progress=False, scheme=custom)
    assert len(opened) == 3  # the same custom scheme again: a hit

    # Other library code: the quick memo misses, the plan memo answers.
    # (where quick_key looks it up)
    import sklearn_specsig.store._keys as keys_module

    monkeypatch.setattr(keys_module, "code_digest", lambda: "another release")
    compute_signature(model, cache=store, progress=False)
    assert len(opened) == 4 and count_solves() == 21


# -- settings are checked before any file is read (issue 12) -------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"metric": "bogus"}, "metric='bogus' is not a metric"),
    ({"precision": "float16"}, "precision='float16' is not supported"),
    ({"precision": None}, "precision=None is not supported"),
    ({"device": "gpu"}, "device='gpu' is not a device"),
    ({"device": 0}, "device=0 is not a device"),
])
def test_bad_settings_raise_before_any_read(small_zoo, tmp_path, monkeypatch, count_solves,
                                            kwargs, match):
    from sklearn_specsig.engine import _extract

    opened = []
    monkeypatch.setattr(_extract, "locate_checkpoint", lambda *a, **k: opened.append(a))
    store = SignatureStore(tmp_path / "cache")
    with pytest.raises(ValueError, match=match):
        compute_signature(small_zoo.paths[0], cache=store, progress=False, **kwargs)
    assert count_solves() == 0 and opened == []
    assert store.stats()["models"] == 0


def test_sign_models_checks_once_whatever_on_error(small_zoo, count_solves):
    from sklearn_specsig.engine import sign_models

    kwargs = {"device": "cpu", "cache": None, "precision": "float16", "progress": False}
    with pytest.raises(ValueError, match="precision"):
        sign_models(small_zoo.paths[:3], "alpha_hill", kwargs, None, "warn")
    assert count_solves() == 0


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_rule_without_cuda(monkeypatch, device):
    import torch

    from sklearn_specsig.engine._extract import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if device in ("auto", "cpu"):
        assert check_device(device) == torch.device("cpu")
    else:
        with pytest.raises(ValueError, match="no CUDA GPU"):
            check_device(device)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        check_device(torch.device("cuda"))
    assert check_device(torch.device("cpu")) == torch.device("cpu")


def test_device_rule_with_one_gpu(monkeypatch):
    import torch

    from sklearn_specsig.engine._extract import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda") == torch.device("cuda")
    assert check_device("cuda:0") == torch.device("cuda:0")
    assert check_device("auto").type == "cuda"
    with pytest.raises(ValueError, match="GPU 1 but torch sees 1"):
        check_device("cuda:1")
    for bad in ("gpu", "mps", "cuda:x", "CPU", "cuda:"):
        with pytest.raises(ValueError, match="is not a device"):
            check_device(bad)
