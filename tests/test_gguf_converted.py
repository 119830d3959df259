"""GGUF files of architectures whose llama.cpp converter renames or re-lays tensors.

Each test writes a tiny checkpoint with the architecture's own
``transformers`` class, converts it as llama.cpp's ``convert_hf_to_gguf.py``
does (names from gguf-py's own table, ``gguf.get_tensor_name_map`` /
``gguf.TENSOR_NAMES``; metadata through ``gguf.GGUFWriter``'s own setters;
float32 tensors; the converter's ``modify_tensors`` reshapes reproduced
below), and checks that the GGUF signs as the checkpoint does.  Where the
converter reorders a fused qkv, a GGUF written *without* the reorder must
sign differently, so that each test can fail.
"""

import json

import numpy as np
import pytest

from sklearn_specsig import compute_signature
from sklearn_specsig.errors import ConfigError

gguf = pytest.importorskip("gguf")
pytest.importorskip("transformers")

from _checkpoint_factories import write_converted_gguf
from _transformers_factories import write_tiny_checkpoint

RTOL = 1e-5


# -- the converter's reshapes (convert_hf_to_gguf.py) ---------------------------

def _bloom_qkv(w, n_head, n_embed):
    """BloomModel / GPTNeoXModel.modify_tensors: per-head (q, k, v) rows -> [q; k; v]."""
    qkv = w.reshape(n_head, 3, n_embed // n_head, n_embed)
    return np.concatenate([qkv[:, i].reshape(-1, n_embed) for i in range(3)])


def _falcon_qkv(w, n_head, n_head_kv, hidden):
    """FalconModel.modify_tensors: n_head_kv groups of (queries, k, v) -> [q; k; v]."""
    head_dim = hidden // n_head
    qkv = w.reshape(n_head_kv, n_head // n_head_kv + 2, head_dim, head_dim * n_head)
    q = qkv[:, :-2].reshape(n_head * head_dim, head_dim * n_head)
    k = qkv[:, [-2]].reshape(n_head_kv * head_dim, head_dim * n_head)
    v = qkv[:, [-1]].reshape(n_head_kv * head_dim, head_dim * n_head)
    return np.concatenate((q, k, v)).reshape(w.shape)


def _qkv_name(layer):
    return gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ATTN_QKV].format(bid=layer) + ".weight"


def _convert(folder, path, arch, meta, strip=(), qkv=None, merge_experts=False):
    """Rename every tensor by gguf-py's table after the converter's own
    rewrite (``qkv``: the fused-attention reshape; ``merge_experts``:
    Qwen2MoeModel / OlmoeModel's stacking of per-expert matrices)."""
    from safetensors.torch import load_file

    enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch]
    table = gguf.get_tensor_name_map(enum, meta["block_count"])
    state = {k: v.float().numpy() for k, v in load_file(folder / "model.safetensors").items()}
    if merge_experts:
        for layer in range(meta["block_count"]):
            p = f"model.layers.{layer}.mlp.experts."
            for proj in ("gate_proj", "up_proj", "down_proj"):
                keys = [p + f"{e}.{proj}.weight" for e in range(meta["expert_count"])]
                state[p + f"{proj}.weight"] = np.stack([state.pop(k) for k in keys])
    tensors = {}
    for name, array in state.items():
        for prefix in strip:
            name = name.removeprefix(prefix)
        if qkv is not None and name.endswith("query_key_value.weight"):
            array = qkv(array)
        new = table.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is not None:
            tensors[new] = array
    return write_converted_gguf(path, arch, tensors, meta)


def _sign(path):
    return compute_signature(path, cache=None, progress=False)


def _assert_same(gg, hf):
    assert gg.n_layers == hf.n_layers
    assert gg.missing_layers() == {} and gg.undefined_matrices() == {}
    np.testing.assert_array_equal(np.isnan(gg.values), np.isnan(hf.values))
    np.testing.assert_allclose(gg.values, hf.values, rtol=RTOL)


def _assert_qkv_differs(gg_wrong, hf):
    """The un-reordered layout cuts other q / k / v rows: some cell moves."""
    rows = slice(0, 3)  # q, k, v
    assert not np.allclose(gg_wrong.values[rows], hf.values[rows], rtol=RTOL, equal_nan=True)
    # o, up, down are untouched by the reorder.
    np.testing.assert_allclose(gg_wrong.values[3:], hf.values[3:], rtol=RTOL)


def _hparams(folder):
    return json.loads((folder / "config.json").read_text())


# -- Bloom, GPT-NeoX: per-head interleaved query_key_value ----------------------

@pytest.mark.parametrize("model_type, arch, strip", [
    ("bloom", "bloom", ("transformer.",)),
    ("gpt_neox", "gptneox", ()),
])
def test_interleaved_qkv_reordered_by_the_converter(model_type, arch, strip, tmp_path):
    model = write_tiny_checkpoint(model_type, tmp_path / "hf")
    hp = _hparams(tmp_path / "hf")
    n_head = hp.get("n_head", hp.get("num_attention_heads"))
    n_embed = hp.get("hidden_size", hp.get("n_embed"))
    n_ff = 4 * n_embed if model_type == "bloom" else hp["intermediate_size"]
    meta = {"block_count": model.config.num_hidden_layers, "embedding_length": n_embed,
            "feed_forward_length": n_ff, "head_count": n_head, "head_count_kv": n_head}
    hf = _sign(tmp_path / "hf")
    gg = _sign(_convert(tmp_path / "hf", tmp_path / "m.gguf", arch, meta, strip,
                        qkv=lambda w: _bloom_qkv(w, n_head, n_embed)))
    _assert_same(gg, hf)
    # The interleaved rows written as they are: the reorder is what matters.
    wrong = _sign(_convert(tmp_path / "hf", tmp_path / "raw.gguf", arch, meta, strip))
    _assert_qkv_differs(wrong, hf)


# -- Falcon: 7B-style multi-query, 40B-style new decoder ------------------------

@pytest.mark.parametrize("overrides, hub_drops", [
    # falcon-7b's config.json names no num_kv_heads, so the converter's
    # ``find_hparam([...], optional=True) or 1`` gives one key-value head.
    ({"multi_query": True, "new_decoder_architecture": False}, ("num_kv_heads",)),
    # falcon-40b: num_kv_heads groups, each (queries, k, v).
    ({"new_decoder_architecture": True, "num_kv_heads": 2}, ()),
], ids=["7b_multi_query", "40b_new_decoder"])
def test_falcon_qkv_reordered_by_the_converter(overrides, hub_drops, tmp_path):
    model = write_tiny_checkpoint("falcon", tmp_path / "hf", **overrides)
    hp = {k: v for k, v in _hparams(tmp_path / "hf").items() if k not in hub_drops}
    n_head = hp.get("num_attention_heads", hp.get("n_head"))
    n_head_kv = hp.get("num_kv_heads", hp.get("n_head_kv")) or 1
    hidden = hp["hidden_size"]
    meta = {"block_count": model.config.num_hidden_layers, "embedding_length": hidden,
            "feed_forward_length": 4 * hidden, "head_count": n_head, "head_count_kv": n_head_kv}

    def reorder(w):
        return _falcon_qkv(w, n_head, n_head_kv, hidden)

    hf = _sign(tmp_path / "hf")
    gg = _sign(_convert(tmp_path / "hf", tmp_path / "m.gguf", "falcon", meta, qkv=reorder))
    _assert_same(gg, hf)
    w = model.state_dict()["transformer.h.0.self_attention.query_key_value.weight"].numpy()
    if n_head_kv == 1:
        # One group: the converter's reorder is the identity on [q; k; v].
        np.testing.assert_array_equal(reorder(w), w)
        # The head_count_kv the converter writes is then what cuts the rows:
        # a full-attention count must be refused, not cut silently.
        bad = _convert(tmp_path / "hf", tmp_path / "raw.gguf", "falcon",
                       {**meta, "head_count_kv": n_head}, qkv=reorder)
        with pytest.raises(ConfigError, match="attn_qkv"):
            _sign(bad)
    else:
        assert not np.array_equal(reorder(w), w)
        wrong = _sign(_convert(tmp_path / "hf", tmp_path / "raw.gguf", "falcon", meta))
        _assert_qkv_differs(wrong, hf)


# -- BERT: separate q, k, v under attn_q / attn_k / attn_v ----------------------

def test_bert_names_of_the_converter(tmp_path):
    model = write_tiny_checkpoint("bert", tmp_path / "hf")
    c = model.config
    meta = {"block_count": c.num_hidden_layers, "embedding_length": c.hidden_size,
            "feed_forward_length": c.intermediate_size, "head_count": c.num_attention_heads}
    path = _convert(tmp_path / "hf", tmp_path / "m.gguf", "bert", meta, strip=("bert.",))
    reader = gguf.GGUFReader(path)
    names = {t.name for t in reader.tensors}
    for r in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down"):
        assert f"blk.0.{r}.weight" in names
    hf, gg = _sign(tmp_path / "hf"), _sign(path)
    _assert_same(gg, hf)
    # Not a vacuous match: the q and o rows hold different values.
    assert not np.allclose(gg.values[0], gg.values[3], rtol=RTOL)


# -- Qwen2-MoE, OLMoE: stacked experts, router, shared expert -------------------

@pytest.mark.parametrize("model_type, arch", [("qwen2_moe", "qwen2moe"), ("olmoe", "olmoe")])
def test_moe_experts_merged_by_the_converter(model_type, arch, tmp_path):
    model = write_tiny_checkpoint(model_type, tmp_path / "hf")
    c = model.config
    meta = {"block_count": c.num_hidden_layers, "embedding_length": c.hidden_size,
            "feed_forward_length": c.intermediate_size, "head_count": c.num_attention_heads,
            "head_count_kv": c.num_key_value_heads, "expert_count": c.num_experts,
            "expert_used_count": c.num_experts_per_tok}
    if model_type == "qwen2_moe":
        meta["expert_feed_forward_length"] = c.moe_intermediate_size
        meta["expert_shared_feed_forward_length"] = c.shared_expert_intermediate_size
    path = _convert(tmp_path / "hf", tmp_path / "m.gguf", arch, meta, merge_experts=True)
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    expected = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate_inp"}
    if model_type == "qwen2_moe":
        expected |= {"ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp", "ffn_gate_inp_shexp"}
    assert {f"blk.0.{n}.weight" for n in expected} <= names
    hf, gg = _sign(tmp_path / "hf"), _sign(path)
    _assert_same(gg, hf)


# -- T5: enc.blk / dec.blk, cross-attention skipped as in the checkpoint --------

@pytest.mark.parametrize("n_encoder, n_decoder, feed_forward_proj",
                         [(3, 3, "relu"), (3, 2, "gated-gelu")])
def test_t5_names_of_the_converter(n_encoder, n_decoder, feed_forward_proj, tmp_path):
    gated = feed_forward_proj.startswith("gated")
    write_tiny_checkpoint("t5", tmp_path / "hf", num_layers=n_encoder,
                          num_decoder_layers=n_decoder, feed_forward_proj=feed_forward_proj,
                          is_gated_act=gated, dense_act_fn=feed_forward_proj.split("-")[-1])
    hp = _hparams(tmp_path / "hf")
    meta = {"block_count": max(n_encoder, n_decoder), "embedding_length": hp["d_model"],
            "feed_forward_length": hp["d_ff"], "head_count": hp["num_heads"]}
    path = _convert(tmp_path / "hf", tmp_path / "m.gguf", "t5", meta)
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert {"enc.blk.0.attn_q.weight", "dec.blk.0.cross_attn_k.weight",
            "enc.blk.0.attn_rel_b.weight", "dec.blk.1.ffn_down.weight"} <= names
    assert ("enc.blk.0.ffn_gate.weight" in names) == gated
    hf, gg = _sign(tmp_path / "hf"), _sign(path)
    assert gg.n_layers == n_encoder + n_decoder
    _assert_same(gg, hf)
