"""PEFT LoRA adapters signed as the merged model, against peft's own merge."""

import json
import shutil
import warnings

import numpy as np
import pytest
from _transformers_factories import write_tiny_checkpoint

from sklearn_specsig import SignatureStore, compute_signature
from sklearn_specsig.errors import CheckpointFormatError, CheckpointNotFoundError

peft = pytest.importorskip("peft")
torch = pytest.importorskip("torch")


def _adapter(base_dir, folder, *, seed=1, record_base=True, **lora):
    """Write a LoRA adapter of the tiny llama at ``base_dir`` with non-zero B,
    and the peft-merged model beside it (``folder``-merged)."""
    transformers = pytest.importorskip("transformers")
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **lora}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
        torch.manual_seed(seed)
        peft_model = peft.get_peft_model(
            model, peft.LoraConfig(init_lora_weights=False, **lora))
        peft_model.save_pretrained(folder)
        merged = folder.parent / f"{folder.name}-merged"
        peft_model.merge_and_unload().save_pretrained(merged)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    assert config["base_model_name_or_path"] == str(base_dir)
    if not record_base:
        config["base_model_name_or_path"] = None
        config_file.write_text(json.dumps(config))
    return merged


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora") / "base"
    write_tiny_checkpoint("llama", folder)
    return folder


def _close(a, b):
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5)


@pytest.mark.parametrize("lora", [
    {},
    {"use_rslora": True, "r": 8, "lora_alpha": 4},
    {"rank_pattern": {"layers.1.self_attn.q_proj": 2},
     "alpha_pattern": {"v_proj": 32}, "target_modules": ["q_proj", "v_proj", "down_proj"]},
], ids=["alpha/r", "rslora", "patterns"])
def test_an_adapter_signs_as_peft_merged_model(base, tmp_path, lora):
    merged = _adapter(base, tmp_path / "adapter", **lora)
    sig = compute_signature(tmp_path / "adapter", cache=None, progress=False)
    reference = compute_signature(merged, cache=None, progress=False)
    base_sig = compute_signature(base, cache=None, progress=False)
    _close(sig, reference)
    assert np.isfinite(sig.values).all()
    # The delta matters: q and v move, k does not.
    changed = ~np.isclose(sig.values, base_sig.values, rtol=1e-6)
    assert changed[0].all() and changed[2].all() and not changed[1].any()


def test_merged_tensors_equal_merge_and_unload(base, tmp_path):
    from safetensors.torch import load_file

    from sklearn_specsig.checkpoints import open_checkpoint

    merged = _adapter(base, tmp_path / "adapter", use_rslora=True)
    ckpt = open_checkpoint(tmp_path / "adapter")
    assert ckpt.tensor_names() == open_checkpoint(base).tensor_names()
    reference = load_file(merged / "model.safetensors")
    touched = 0
    for name, tensor in ckpt.iter_tensors():
        if name in reference:
            assert tensor.dtype == reference[name].dtype
            torch.testing.assert_close(tensor, reference[name], rtol=1e-6, atol=1e-7)
            touched += name in ckpt.deltas
    assert touched == 6  # q_proj and v_proj of 3 layers


def test_base_keyword_wins_and_a_missing_base_is_named(base, tmp_path):
    merged = _adapter(base, tmp_path / "adapter", record_base=False)
    with pytest.raises(CheckpointNotFoundError, match="base_model_name_or_path.*base="):
        compute_signature(tmp_path / "adapter", cache=None, progress=False)
    sig = compute_signature(tmp_path / "adapter", base=base, cache=None, progress=False)
    _close(sig, compute_signature(merged, cache=None, progress=False))

    config_file = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    config_file.write_text(json.dumps(config))
    with pytest.raises(CheckpointNotFoundError, match="gone.*base_model_name_or_path.*base="):
        compute_signature(tmp_path / "adapter", cache=None, progress=False)
    # base= wins over a wrong base_model_name_or_path.
    again = compute_signature(tmp_path / "adapter", base=str(base), cache=None, progress=False)
    _close(again, sig)
    with pytest.raises(ValueError, match="not a PEFT adapter"):
        compute_signature(base, base=base, cache=None, progress=False)


def test_untouched_matrices_hit_the_base_cache(base, tmp_path, count_solves):
    store = SignatureStore(tmp_path / "cache")
    compute_signature(base, cache=store, progress=False)
    assert count_solves() == 21  # 7 roles x 3 layers
    _adapter(base, tmp_path / "one", seed=1)
    _adapter(base, tmp_path / "two", seed=2)
    compute_signature(tmp_path / "one", cache=store, progress=False)
    assert count_solves() == 27  # q and v of 3 layers
    compute_signature(tmp_path / "two", cache=store, progress=False)
    assert count_solves() == 33
    compute_signature(tmp_path / "two", cache=store, progress=False)
    assert count_solves() == 33  # the memo: nothing read

    # A changed adapter misses the memo and solves its matrices again.
    adapter = tmp_path / "one" / "adapter_model.safetensors"
    shutil.copy(tmp_path / "two" / "adapter_model.safetensors", adapter)
    compute_signature(tmp_path / "one", cache=store, progress=False)
    assert count_solves() == 33  # now adapter two's content: every spectrum cached


def test_refused_adapters_say_why(base, tmp_path):
    _adapter(base, tmp_path / "adapter")
    config_file = tmp_path / "adapter" / "adapter_config.json"
    original = config_file.read_text()
    for change, message in [
        ({"use_dora": True}, "use_dora.*DoRA"),
        ({"peft_type": "IA3"}, "'IA3' adapter; only LoRA"),
        ({"init_lora_weights": "pissa"}, "pissa.*rewrites the base"),
    ]:
        config_file.write_text(json.dumps({**json.loads(original), **change}))
        with pytest.raises(CheckpointFormatError, match=message):
            compute_signature(tmp_path / "adapter", cache=None, progress=False)
    config_file.write_text(original)

    # An adapter of another model: its factors match no tensor of this base.
    other = tmp_path / "other"
    write_tiny_checkpoint("llama", other, hidden_size=32, head_dim=8)
    with pytest.raises(CheckpointFormatError, match="do not fit.*base="):
        compute_signature(tmp_path / "adapter", base=other, cache=None, progress=False)
    gpt2 = tmp_path / "gpt2"
    write_tiny_checkpoint("gpt2", gpt2)
    with pytest.raises(CheckpointFormatError, match="match no tensor.*base="):
        compute_signature(tmp_path / "adapter", base=gpt2, cache=None, progress=False)


def test_gpt2_fan_in_fan_out(tmp_path):
    transformers = pytest.importorskip("transformers")
    write_tiny_checkpoint("gpt2", tmp_path / "base")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base")
        torch.manual_seed(0)
        peft_model = peft.get_peft_model(model, peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True,
            init_lora_weights=False))
        peft_model.save_pretrained(tmp_path / "adapter")
        peft_model.merge_and_unload().save_pretrained(tmp_path / "merged")
    sig = compute_signature(tmp_path / "adapter", cache=None, progress=False)
    _close(sig, compute_signature(tmp_path / "merged", cache=None, progress=False))
