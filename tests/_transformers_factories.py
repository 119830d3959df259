"""Tiny random checkpoints written by ``transformers``' own model classes.

The tensor names, shapes, fused layouts and configs are then the library's,
not our guesses of them.  Offline: ``AutoConfig.for_model`` needs no hub.
"""

import warnings

import numpy as np
import pytest

# Small sizes under every spelling the configs use; a key is only set when
# the config has it.
SMALL = dict(
    hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=128, max_position_embeddings=64, head_dim=16,
    n_embd=64, n_layer=3, n_head=4, n_inner=96, d_model=64, d_ff=96, num_layers=3,
    num_heads=4, d_kv=16, num_decoder_layers=3, moe_intermediate_size=32, num_experts=4,
    num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2,
    shared_expert_intermediate_size=48, q_lora_rank=32, kv_lora_rank=16,
    qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, ffn_hidden_size=96, n_heads=4,
    hidden_dim=96, dim=64, embedding_size=64, ffn_dim=96, word_embed_proj_dim=64,
    state_size=8, expand=2, num_kv_heads=2, first_k_dense_replace=1, n_group=1,
    topk_group=1,
)


def tiny_config(model_type, **overrides):
    """``AutoConfig.for_model(model_type)`` shrunk to a few layers of width 64."""
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model(model_type)
    present = config.to_dict()
    for key, value in {**SMALL, **overrides}.items():
        if key in present or key in overrides:
            setattr(config, key, value)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types)[: config.num_hidden_layers]
    return config


def write_tiny_checkpoint(model_type, folder, *, seed=0, **overrides):
    """Save a randomly initialised model of ``model_type`` to ``folder``.

    Returns
    -------
    model : transformers.PreTrainedModel
        The model as saved (its ``state_dict`` is the reference).
    """
    transformers = pytest.importorskip("transformers")
    import torch

    config = tiny_config(model_type, **overrides)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = transformers.AutoModelForCausalLM.from_config(config)
        except ValueError:  # encoders have no causal-LM head
            model = transformers.AutoModel.from_config(config)
        model.save_pretrained(folder)
    return model


def float64_alpha(matrix):
    """PL_Alpha_Hill of a float64 eigendecomposition (docs/design.md)."""
    w = np.asarray(matrix, dtype=np.float64)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    lam = np.sort(np.linalg.eigvalsh(gram))
    i = lam.size // 2
    return 1.0 + (lam.size - i) / np.sum(np.log(lam[i:] / lam[i]))


#: Relative accuracy promised for PL_Alpha_Hill (README, "Precision").
RTOL = 1e-5


def state_dict64(model):
    """The model's state dict as float64 numpy arrays (the reference's input)."""
    return {k: v.detach().double().numpy() for k, v in model.state_dict().items()}


def assert_column(sig, layer, cells, label):
    """Check one layer of ``sig`` against ``cells`` ({role: [matrices]}).

    A role in ``cells`` equals the mean float64 PL_Alpha_Hill of its
    matrices (experts averaged) to :data:`RTOL`; a role not in ``cells`` is
    NaN (the architecture lacks it).

    Returns
    -------
    float
        The largest relative error in the column.
    """
    from sklearn_specsig import ROLES

    max_err = 0.0
    for i, role in enumerate(ROLES):
        value = sig.values[i, layer]
        if role not in cells:
            assert np.isnan(value), (label, role, layer)
            continue
        ref = np.mean([float64_alpha(m) for m in cells[role]])
        np.testing.assert_allclose(value, ref, rtol=RTOL,
                                   err_msg=f"{label} {role} layer {layer}")
        max_err = max(max_err, abs(value / ref - 1.0))
    return max_err
