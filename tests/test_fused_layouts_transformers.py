"""Fused tensors cut as the model itself cuts them, and every Falcon layout.

The table test (``test_architectures_transformers.py``) checks the library
against reference matrices written from the modelling code.  Here the
library's own split (:meth:`TensorPlan.split`) is checked against what the
model *computes*: the query, key and value its attention forward passes to
its kernel (captured by wrapping the modelling module's
``eager_attention_forward``, or Bloom's ``_reshape``), and the per-expert
weights DBRX's expert loop hands to its GLU.  A one-token input keeps the
rotary embedding at position 0, where it is the identity.
"""

import _decoder_references as refs
import numpy as np
import pytest
from _transformers_factories import assert_column, state_dict64, write_tiny_checkpoint

from sklearn_specsig import compute_signature
from sklearn_specsig.architectures import resolve_architecture
from sklearn_specsig.checkpoints import open_checkpoint

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def library_matrices(folder, tensor_name):
    """``{role: [matrix per expert]}`` of one stored tensor, as the library cuts it."""
    checkpoint = open_checkpoint(folder)
    names = checkpoint.tensor_names()
    shapes = {name: checkpoint.tensor_shape(name) for name in names}
    arch = resolve_architecture(names, checkpoint.config, shapes)
    plan = arch.plans[tensor_name]
    tensor = dict(checkpoint.iter_tensors([tensor_name]))[tensor_name]
    cells = {}
    for role, _, _, matrix in plan.split(torch.as_tensor(tensor).float()):
        cells.setdefault(role, []).append(matrix)
    return cells


def captured_attention(model, modeling, attention, input_ids, monkeypatch):
    """The attention's input and the (query, key, value) it hands its kernel."""
    seen = {}
    kernel = modeling.eager_attention_forward

    def spy(module, query, key, value, *args, **kwargs):
        if module is attention:
            seen["qkv"] = (query, key, value)
        return kernel(module, query, key, value, *args, **kwargs)

    def take_input(module, args, kwargs):
        seen["x"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    monkeypatch.setattr(modeling, "eager_attention_forward", spy)
    model.config._attn_implementation = "eager"
    handle = attention.register_forward_pre_hook(take_input, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids)
    finally:
        handle.remove()
    return seen["x"], seen["qkv"]


def as_heads(x, matrix, head_dim):
    """``x @ matrix.T`` as (batch, heads, seq, head_dim), the models' layout."""
    y = x @ matrix.T
    return y.view(*y.shape[:-1], -1, head_dim).transpose(1, 2)


def assert_same(got, want, what):
    np.testing.assert_allclose(got.numpy(), want.float().numpy(), rtol=1e-4, atol=1e-5,
                               err_msg=what)


def assert_signature(folder, model, expected):
    """The signature of ``folder`` is complete and equals the float64 reference."""
    sig = compute_signature(folder, cache=None, progress=False)
    sd = state_dict64(model)
    assert sig.missing_layers() == {} and sig.undefined_matrices() == {}
    for layer in range(model.config.num_hidden_layers):
        assert_column(sig, layer, expected(sd, layer), "falcon")


FALCON_LAYOUTS = {
    "new-gqa": {"new_decoder_architecture": True, "num_kv_heads": 2},
    "new-mqa": {"new_decoder_architecture": True, "num_kv_heads": 1},
    "old-multi-query": {"new_decoder_architecture": False, "multi_query": True},
    "old-mha": {"new_decoder_architecture": False, "multi_query": False, "num_kv_heads": 4},
}


@pytest.mark.parametrize("layout", sorted(FALCON_LAYOUTS))
def test_falcon_every_layout(layout, tmp_path, monkeypatch):
    from transformers.models.falcon import modeling_falcon

    model = write_tiny_checkpoint("falcon", tmp_path, **FALCON_LAYOUTS[layout])
    assert_signature(tmp_path, model, refs.falcon(model.config))
    name = "transformer.h.1.self_attention.query_key_value.weight"
    cells = library_matrices(tmp_path, name)
    attention = model.transformer.h[1].self_attention
    x, states = captured_attention(model, modeling_falcon, attention,
                                   torch.tensor([[3], [7]]), monkeypatch)
    for role, state in zip("qkv", states):
        assert_same(as_heads(x, cells[role][0], attention.head_dim), state, f"{layout} {role}")


def test_bloom_split_is_the_models(tmp_path):
    model = write_tiny_checkpoint("bloom", tmp_path)
    attention = model.transformer.h[1].self_attention
    cells = library_matrices(tmp_path, "transformer.h.1.self_attention.query_key_value.weight")
    seen = {}
    reshape = attention._reshape

    def spy(fused):
        seen["qkv"] = reshape(fused)
        return seen["qkv"]

    attention._reshape = spy
    handle = attention.query_key_value.register_forward_pre_hook(
        lambda module, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        attention.query_key_value.bias.zero_()  # compare the weights' rows alone
        model(torch.tensor([[3, 5, 9], [7, 1, 2]]))
    handle.remove()
    for role, state in zip("qkv", seen["qkv"]):
        # _reshape returns (batch, heads, seq, head_dim)
        assert_same(as_heads(seen["x"], cells[role][0], attention.head_dim), state, role)


def test_dbrx_split_is_the_models(tmp_path, monkeypatch):
    from transformers.models.dbrx import modeling_dbrx

    model = write_tiny_checkpoint("dbrx", tmp_path, **refs.dbrx_overrides())
    block, prefix = model.transformer.blocks[1], "transformer.blocks.1."
    attention = block.norm_attn_norm.attn
    for each in model.transformer.blocks:
        # transformers 5.25 clamps with clip_qkv=None and fails; DBRX itself
        # clips at 8, and a bound that nothing reaches keeps the states exact.
        each.norm_attn_norm.attn.clip_qkv = 1e4
    cells = library_matrices(tmp_path, prefix + "norm_attn_norm.attn.Wqkv.weight")
    x, states = captured_attention(model, modeling_dbrx, attention, torch.tensor([[3], [7]]),
                                   monkeypatch)
    for role, state in zip("qkv", states):
        assert_same(as_heads(x, cells[role][0], attention.head_dim), state, role)
    # The expert loop hands each expert's (w1, v1, w2) views to the GLU,
    # which computes x @ w1.T, x @ v1.T and h @ w2.
    library = {role: library_matrices(tmp_path, prefix + f"ffn.experts.mlp.{name}")[role]
               for role, name in (("gate", "w1"), ("up", "v1"), ("down", "w2"))}
    glu, seen = block.ffn.experts.mlp, []
    forward = glu.forward
    monkeypatch.setattr(glu, "forward", lambda x, w1, v1, w2: seen.append((w1, v1, w2))
                        or forward(x, w1, v1, w2))
    with torch.no_grad():
        model(torch.arange(64).reshape(4, 16) % 128)
    assert seen
    for w1, v1, w2 in seen:
        (e,) = [e for e, m in enumerate(library["gate"]) if torch.equal(m, w1.float())]
        assert torch.equal(library["up"][e], v1.float())
        assert torch.equal(library["down"][e], w2.float().T)  # (out, in) = w2[e].T


def test_deepseek_mla_split_is_the_models(tmp_path, monkeypatch):
    from transformers.models.deepseek_v3 import modeling_deepseek_v3

    model = write_tiny_checkpoint("deepseek_v3", tmp_path, **refs.DEEPSEEK)
    attention = model.model.layers[1].self_attn
    cells = library_matrices(tmp_path, "model.layers.1.self_attn.kv_b_proj.weight")
    query = library_matrices(tmp_path, "model.layers.1.self_attn.q_b_proj.weight")["q"][0]
    seen = {}
    handles = [getattr(attention, name).register_forward_pre_hook(
        lambda module, args, name=name: seen.setdefault(name, args[0]))
        for name in ("kv_b_proj", "q_b_proj")]
    try:
        _, (q, k, v) = captured_attention(model, modeling_deepseek_v3, attention,
                                          torch.tensor([[3], [7]]), monkeypatch)
    finally:
        for handle in handles:
            handle.remove()
    nope, latent = attention.qk_nope_head_dim, seen["kv_b_proj"][:, 0]  # (batch, 1, seq, rank)
    # key = cat(k_nope, k_rot) per head: the library's k is the k_nope part.
    assert_same(as_heads(latent, cells["k"][0], nope), k[..., :nope], "k")
    assert_same(as_heads(latent, cells["v"][0], attention.v_head_dim), v, "v")
    assert_same(as_heads(seen["q_b_proj"], query, attention.qk_head_dim)[..., :nope],
                q[..., :nope], "q")
