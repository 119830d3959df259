"""Encoder-decoder (T5) on one depth axis, and state-space models refused by name.

T5: the signature of an encoder-decoder checkpoint has the encoder's blocks,
then the decoder's (the ``stacks`` of its naming scheme); each block's cells
hold its self-attention and its feed-forward, the decoder's cross-attention
is deliberately skipped.  Every cell is checked against the float64
PL_Alpha_Hill of the matrices taken here from the model's own state dict,
written from ``modeling_t5`` independently of the library's scheme.

Mamba and its hybrids have no q/k/v/o/gate/up/down: they are refused with
an error that names the architecture and says why.
"""

import warnings

import numpy as np
import pytest
from _transformers_factories import assert_column, write_tiny_checkpoint

from sklearn_specsig import ROLES, compute_signature
from sklearn_specsig.architectures import (
    NamingScheme,
    naming_scheme_context,
    resolve_architecture,
)
from sklearn_specsig.errors import UnknownArchitectureError

transformers = pytest.importorskip("transformers")


def _t5_cells(sd, stack, block, gated):
    p = f"{stack}.block.{block}.layer."
    cells = {r: [sd[f"{p}0.SelfAttention.{r}.weight"]] for r in "qkvo"}
    # The feed-forward follows the self-attention in an encoder block and the
    # cross-attention (layer.1.EncDecAttention, not in the signature) in a
    # decoder block.
    ff = f"{p}{1 if stack == 'encoder' else 2}.DenseReluDense."
    if gated:  # T5DenseGatedActDense: wo(act(wi_0(x)) * wi_1(x))
        cells["gate"] = [sd[ff + "wi_0.weight"]]
        cells["up"] = [sd[ff + "wi_1.weight"]]
    else:  # T5DenseActDense: wo(act(wi(x)))
        cells["up"] = [sd[ff + "wi.weight"]]
    cells["down"] = [sd[ff + "wo.weight"]]
    return cells


@pytest.mark.parametrize("n_encoder, n_decoder, feed_forward_proj", [
    (3, 3, "relu"),          # t5-small .. t5-11b
    (3, 2, "gated-gelu"),    # T5 v1.1, mT5, Flan-T5
    (2, 4, "gated-gelu"),    # deeper decoder than num_layers: no block dropped
])
def test_t5_encoder_then_decoder_equal_to_a_float64_reference(
        tmp_path, n_encoder, n_decoder, feed_forward_proj):
    gated = feed_forward_proj.startswith("gated")
    # T5Config derives is_gated_act and dense_act_fn from feed_forward_proj in
    # __init__, and the factory sets attributes afterwards: set all three.
    model = write_tiny_checkpoint("t5", tmp_path, num_layers=n_encoder,
                                  num_decoder_layers=n_decoder,
                                  feed_forward_proj=feed_forward_proj, is_gated_act=gated,
                                  dense_act_fn=feed_forward_proj.split("-")[-1])
    sig = compute_signature(tmp_path, cache=None, progress=False)
    assert sig.n_layers == n_encoder + n_decoder
    assert sig.missing_layers() == {}
    assert sig.undefined_matrices() == {}
    sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    max_err = 0.0
    for layer in range(sig.n_layers):
        stack, block = (("encoder", layer) if layer < n_encoder
                        else ("decoder", layer - n_encoder))
        cells = _t5_cells(sd, stack, block, gated)
        max_err = max(max_err, assert_column(sig, layer, cells, "t5"))
    print(f"t5 ({feed_forward_proj}, {n_encoder}+{n_decoder}): roles {sorted(cells)} "
          f"layers {sig.n_layers} max rel err {max_err:.1e}")


def test_t5_encoder_model_signs_its_encoder(tmp_path):
    config = transformers.AutoConfig.for_model(
        "t5", d_model=64, d_ff=96, d_kv=16, num_heads=4, num_layers=3, vocab_size=128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.T5EncoderModel(config).save_pretrained(tmp_path)
    sig = compute_signature(tmp_path, cache=None, progress=False)
    assert sig.n_layers == 3
    assert np.isnan(sig.values[ROLES.index("gate")]).all()
    assert np.isfinite(np.delete(sig.values, ROLES.index("gate"), axis=0)).all()


def test_stacks_need_a_stack_group():
    with pytest.raises(ValueError, match="stack"):
        NamingScheme(name="x", layer_pattern=r"^enc\.(?P<layer>\d+)\.",
                     modules={"q.weight": "q"}, stacks=("enc", "dec"))


def _ssm_config(model_type):
    config = transformers.AutoConfig.for_model(model_type)
    # Width 64, two blocks; Mamba-2 needs num_heads * head_dim = expand * hidden.
    sizes = {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 128, "state_size": 8,
             "expand": 2, "num_heads": 4, "head_dim": 32, "n_groups": 1, "time_step_rank": 8,
             "conv_kernel": 4, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0}
    for key, value in sizes.items():
        if key in config.to_dict():
            setattr(config, key, value)
    return config


@pytest.mark.parametrize("model_type", ["mamba", "mamba2", "falcon_mamba"])
def test_state_space_models_are_refused_by_name(tmp_path, model_type):
    config = _ssm_config(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    with pytest.raises(UnknownArchitectureError) as info:
        compute_signature(tmp_path, cache=None, progress=False)
    text = str(info.value)
    assert f"model_type={model_type!r}" in text
    assert "state-space" in text and "transformer blocks" in text


def test_a_hybrid_is_refused_and_a_registered_scheme_lifts_the_refusal():
    names = ["model.layers.0.mamba.in_proj.weight", "model.layers.1.self_attn.q_proj.weight"]
    shapes = {names[0]: (256, 64), names[1]: (64, 64)}
    with pytest.raises(UnknownArchitectureError, match="'jamba'.*hybrid"):
        resolve_architecture(names, {"model_type": "jamba"}, shapes)
    mine = NamingScheme(name="my_jamba", layer_pattern=r"^model\.layers\.(?P<layer>\d+)\.",
                        modules={"self_attn.q_proj.weight": "q"}, model_types=("jamba",),
                        skip=(r"mamba\.in_proj\.weight",))
    with naming_scheme_context(mine):
        arch = resolve_architecture(names, {"model_type": "jamba"}, shapes)
    assert arch.name == "my_jamba" and arch.n_layers == 2
    # A forced scheme is the user's own statement of the roles, too.
    assert resolve_architecture(names, {"model_type": "jamba"}, shapes, scheme=mine).n_layers == 2
