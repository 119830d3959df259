"""Models in memory (issue 13, point 5): a module or a state dict is signed
where it is, equal to the same weights saved to disk, through the same
content-keyed cache entries."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from _transformers_factories import float64_alpha, write_tiny_checkpoint
from safetensors.torch import load_file, save_file

from sklearn_specsig import SignatureStore, SpectralSignatureTransformer, compute_signature
from sklearn_specsig.checkpoints import MemoryCheckpoint, locate_model
from sklearn_specsig.errors import CheckpointFormatError
from sklearn_specsig.signature import ROLES

PLAIN_CONFIG = {
    "model_type": "llama", "num_hidden_layers": 2, "hidden_size": 16,
    "intermediate_size": 24, "num_attention_heads": 2, "num_key_value_heads": 2,
}


def _snapshot(folder):
    return sorted(str(p) for p in folder.rglob("*"))


def _sign(source, store=None, **kwargs):
    return compute_signature(source, cache=store, progress=False, device="cpu", **kwargs)


def _assert_same(a, b):
    np.testing.assert_array_equal(a.values, b.values)
    assert a.fingerprint == b.fingerprint
    assert a.architecture == b.architecture and a.n_layers == b.n_layers
    assert {k: v.tobytes() for k, v in a.spectra.items()} == {
        k: v.tobytes() for k, v in b.spectra.items()}


def test_a_transformers_model_in_memory_is_its_saved_copy(tmp_path, count_solves):
    model = write_tiny_checkpoint("llama", tmp_path / "disk")
    saved = load_file(tmp_path / "disk" / "model.safetensors")
    # state_dict() has the names save_pretrained writes (the tied lm_head,
    # not signed, is dropped on saving).
    assert set(saved) <= set(model.state_dict())
    assert set(model.state_dict()) - set(saved) <= {"lm_head.weight"}

    store = SignatureStore(tmp_path / "cache")
    on_disk = _sign(tmp_path / "disk", store)
    assert count_solves() == 7 * 3
    before = _snapshot(tmp_path)
    in_memory = _sign(model, store)
    # Content keys: every spectrum was stored by the saved copy.
    assert count_solves() == 7 * 3
    _assert_same(in_memory, on_disk)
    assert in_memory.source == "<LlamaForCausalLM in memory>"
    # No file written (the store's SQLite files are opened in place).
    assert _snapshot(tmp_path) == before
    # The model itself is untouched and still trainable.
    assert all(p.requires_grad for p in model.parameters())

    # Against the float64 reference of the weights themselves, to 1e-5.
    q = model.model.layers[1].self_attn.q_proj.weight
    np.testing.assert_allclose(
        in_memory.values[ROLES.index("q"), 1], float64_alpha(q.detach().numpy()), rtol=1e-5)


def test_memory_first_then_disk_solves_nothing_again(tmp_path, count_solves):
    model = write_tiny_checkpoint("llama", tmp_path / "disk", seed=3)
    store = SignatureStore(tmp_path / "cache")
    first = _sign(model, store)
    assert count_solves() == 21
    # Signed again from memory: no file-stat memo, tensors hashed, 0 solves.
    again = _sign(model, store)
    assert count_solves() == 21
    _assert_same(again, first)
    _assert_same(_sign(tmp_path / "disk", store), first)
    assert count_solves() == 21
    # Two models in memory never share a memo entry: no key of an empty
    # file list.  Another model is solved, not answered with the first.
    other = write_tiny_checkpoint("llama", tmp_path / "other", seed=4)
    assert _sign(other, store).fingerprint != first.fingerprint
    assert count_solves() == 42
    assert locate_model(model).file_stats() is None


class _Block(torch.nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.self_attn = torch.nn.Module()
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self.self_attn, name, torch.nn.Linear(hidden, hidden, bias=False))
        self.mlp = torch.nn.Module()
        self.mlp.gate_proj = torch.nn.Linear(hidden, inter, bias=False)
        self.mlp.up_proj = torch.nn.Linear(hidden, inter, bias=False)
        self.mlp.down_proj = torch.nn.Linear(inter, hidden, bias=False)


class _PlainLlama(torch.nn.Module):
    """Llama's tensor names, no transformers."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        c = PLAIN_CONFIG
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList(
            _Block(c["hidden_size"], c["intermediate_size"])
            for _ in range(c["num_hidden_layers"]))


def _save(state, folder, config):
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_plain_module_and_a_state_dict_with_config(tmp_path, count_solves):
    module = _PlainLlama()
    store = SignatureStore(tmp_path / "cache")
    on_disk = _sign(_save(module.state_dict(), tmp_path / "disk", PLAIN_CONFIG), store)
    assert count_solves() == 14
    from_module = _sign(module, store, config=PLAIN_CONFIG)
    from_dict = _sign(dict(module.state_dict()), store, config=PLAIN_CONFIG)
    from_ckpt = _sign(MemoryCheckpoint(module.state_dict(), PLAIN_CONFIG, "mine"), store)
    assert count_solves() == 14
    for sig in (from_module, from_dict, from_ckpt):
        _assert_same(sig, on_disk)
    assert from_module.source == "<_PlainLlama in memory>"
    assert from_dict.source == "<state dict of 14 tensors in memory>"
    assert from_ckpt.source == "mine"
    w = module.model.layers[0].mlp.down_proj.weight.detach().numpy()
    np.testing.assert_allclose(
        from_dict.values[ROLES.index("down"), 0], float64_alpha(w), rtol=1e-5)


def test_config_given_wins_over_the_models_own(tmp_path):
    model = write_tiny_checkpoint("llama", tmp_path / "disk")
    config = model.config.to_dict()
    config["model_type"] = "mistral"  # same names: the reported type changes
    assert _sign(model, config=config).architecture == "mistral"
    assert _sign(model).architecture == "llama"


def test_a_bfloat16_model(tmp_path, count_solves):
    model = write_tiny_checkpoint("llama", tmp_path / "f32", seed=1).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    store = SignatureStore(tmp_path / "cache")
    on_disk = _sign(tmp_path / "bf16", store)
    assert count_solves() == 21
    in_memory = _sign(model, store)
    assert count_solves() == 21
    _assert_same(in_memory, on_disk)
    # The bfloat16 values themselves, in float64, are the reference.
    up = model.model.layers[2].mlp.up_proj.weight.detach().double().numpy()
    np.testing.assert_allclose(
        in_memory.values[ROLES.index("up"), 2], float64_alpha(up), rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_model_on_the_gpu(tmp_path, count_solves):
    model = write_tiny_checkpoint("llama", tmp_path / "disk")
    store = SignatureStore(tmp_path / "cache")
    on_disk = _sign(tmp_path / "disk", store)
    _assert_same(_sign(model.to("cuda"), store), on_disk)
    assert count_solves() == 21


def test_bad_sources_say_what_to_pass(tmp_path, small_zoo):
    with pytest.raises(TypeError, match="Cannot sign a int: expected a path"):
        _sign(3)
    with pytest.raises(CheckpointFormatError, match="'w' maps to ndarray"):
        _sign({"w": np.zeros((3, 2))}, config=PLAIN_CONFIG)
    with pytest.raises(CheckpointFormatError, match="empty"):
        _sign({}, config=PLAIN_CONFIG)
    with pytest.raises(ValueError, match="config= is for models in memory"):
        _sign(small_zoo.paths[0], config=PLAIN_CONFIG)
    with pytest.raises(TypeError, match="config= of .* should be a dict"):
        _sign(_PlainLlama(), config=["not", "a", "config"])


def test_the_transformer_takes_models_in_memory(tmp_path):
    models = [write_tiny_checkpoint("llama", tmp_path / f"m{i}", seed=i) for i in range(2)]
    from_disk = SpectralSignatureTransformer(cache=None, device="cpu").fit_transform(
        [tmp_path / "m0", tmp_path / "m1"])
    t = SpectralSignatureTransformer(cache=None, device="cpu")
    np.testing.assert_array_equal(t.fit_transform(models), from_disk)
    # Pickled to worker processes.
    parallel = SpectralSignatureTransformer(cache=None, device="cpu", n_jobs=2)
    np.testing.assert_array_equal(parallel.fit_transform(models), from_disk)
    state = MemoryCheckpoint(models[1].state_dict(), models[1].config)
    np.testing.assert_array_equal(t.transform([state])[0], from_disk[1])
    with pytest.raises(ValueError, match="got a single LlamaForCausalLM; wrap it in a list"):
        t.transform(models[0])
    with pytest.raises(ValueError, match="got a single dict; wrap it in a list"):
        t.transform(dict(models[0].state_dict()))
    with pytest.raises(ValueError, match="each model should be a path"):
        t.transform([models[0], 3])


def test_a_model_that_fails_warns_with_its_name(tmp_path):
    t = SpectralSignatureTransformer(cache=None, device="cpu", on_error="warn")
    good = write_tiny_checkpoint("llama", tmp_path / "m")
    bad = {"w": torch.zeros(3, 2)}  # no llama names: unknown architecture
    with pytest.warns(UserWarning, match=r"(?s)<state dict of 1 tensors in memory>: No registered.*NaN"):
        rows = t.fit_transform([good, bad])
    assert np.isnan(rows[1]).all() and not np.isnan(rows[0]).all()


def test_importing_the_package_does_not_import_transformers():
    code = (
        "import sys, sklearn_specsig, sklearn_specsig.checkpoints\n"
        "from sklearn_specsig import compute_signature, SpectralSignatureTransformer\n"
        "import sklearn_specsig.engine\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_meta_weights_and_unmerged_lora_layers_are_refused_with_what_to_do(tmp_path):
    import torch

    from sklearn_specsig.errors import CheckpointFormatError

    peft = pytest.importorskip("peft")
    model = write_tiny_checkpoint("llama", tmp_path / "base")
    with torch.device("meta"):
        empty = type(model)(model.config)
    with pytest.raises(CheckpointFormatError, match="'meta' device"):
        compute_signature(empty, cache=None, progress=False)
    with warnings.catch_warnings():  # transformers' own deprecation notes
        warnings.simplefilter("ignore")
        tuned = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(CheckpointFormatError, match="merge_and_unload"):
        compute_signature(tuned, cache=None, progress=False)
