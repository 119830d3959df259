"""Never a silent partial signature: every block weight is mapped or skipped.

A checkpoint written by ``transformers`` is given one more block weight
that no naming scheme knows; it must be refused by name (or, with
``on_error="warn"``, be a NaN row with a warning naming the tensor), never
signed without it.  See ``architectures/_accounting.py``.
"""

import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from _transformers_factories import write_tiny_checkpoint
from safetensors.torch import load_file, save_file

from sklearn_specsig import SpectralSignatureTransformer, compute_signature
from sklearn_specsig.architectures import (
    NamingScheme,
    get_naming_scheme,
    list_naming_schemes,
    resolve_architecture,
)
from sklearn_specsig.errors import UnknownArchitectureError

pytest.importorskip("transformers")

EXTRA = "model.layers.0.mlp.extra_proj.weight"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    write_tiny_checkpoint("llama", folder)
    return folder


def with_extra(source, folder, extra):
    """A copy of the checkpoint ``source`` with the tensors ``extra`` added."""
    shutil.copytree(source, folder)
    path = folder / "model.safetensors"
    tensors = load_file(path)
    tensors.update({name: torch.randn(*shape, generator=torch.Generator().manual_seed(1))
                    for name, shape in extra.items()})
    save_file(tensors, path, metadata={"format": "pt"})
    return folder


def llama_with(skip=()):
    base = get_naming_scheme("llama")
    return NamingScheme(name="llama_custom", layer_pattern=base.layer_pattern,
                        modules=base.modules, skip=base.skip + tuple(skip))


def test_an_unknown_block_weight_is_refused_by_name(tiny_llama, tmp_path):
    model = with_extra(tiny_llama, tmp_path / "m", {EXTRA: (48, 64)})
    with pytest.raises(UnknownArchitectureError) as info:
        compute_signature(model, cache=None, progress=False)
    message = str(info.value)
    assert "Naming scheme 'llama'" in message
    assert f"{EXTRA}  shape=(48, 64)" in message
    # The fix, ready to paste: the remainder after the layer prefix.
    assert 'skip=(r"mlp\\.extra_proj\\.weight",)' in message
    assert "modules" in message and 'docs/design.md, "How to add a naming scheme"' in message
    assert "report it" in message


def test_on_error_warn_gives_a_nan_row_and_a_warning_naming_the_tensor(tiny_llama, tmp_path):
    bad = with_extra(tiny_llama, tmp_path / "bad", {EXTRA: (48, 64)})
    est = SpectralSignatureTransformer(cache=None, on_error="warn", progress=False)
    with pytest.warns(UserWarning) as record:
        Z = est.fit_transform([str(tiny_llama), str(bad)])
    said = [str(w.message) for w in record if issubclass(w.category, UserWarning)]
    assert any(str(bad) in text and EXTRA in text and "row is NaN" in text for text in said)
    assert np.isfinite(Z[0]).all() and np.isnan(Z[1]).all()


def test_a_scheme_that_skips_it_signs_the_same_values(tiny_llama, tmp_path):
    model = with_extra(tiny_llama, tmp_path / "m", {EXTRA: (48, 64)})
    sig = compute_signature(model, cache=None, progress=False,
                            scheme=llama_with(skip=[r"mlp\.extra_proj\.weight"]))
    clean = compute_signature(tiny_llama, cache=None, progress=False)
    np.testing.assert_array_equal(sig.values, clean.values)
    assert all(EXTRA not in labels for labels in sig.cell_tensors().values())


def test_one_dimensional_extras_and_rotary_buffers_need_nothing(tiny_llama, tmp_path):
    model = with_extra(tiny_llama, tmp_path / "m", {
        "model.layers.0.mlp.extra_scale": (64,),
        "model.layers.1.self_attn.rotary_emb.inv_freq": (8,),
        # Some remote-code checkpoints persist their rotary tables.
        "model.layers.1.self_attn.rotary_emb.cos_cached": (64, 16),
    })
    sig = compute_signature(model, cache=None, progress=False)
    assert np.isfinite(sig.values).all()


def block_shapes(n_layers=3):
    shapes = {"model.embed_tokens.weight": (50, 16)}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        shapes.update({p + f"self_attn.{r}_proj.weight": (16, 16) for r in "qkvo"})
        shapes.update({p + "mlp.gate_proj.weight": (24, 16), p + "mlp.up_proj.weight": (24, 16),
                       p + "mlp.down_proj.weight": (16, 24), p + "input_layernorm.weight": (16,)})
    return shapes


def test_the_message_lists_a_few_then_a_count():
    shapes = block_shapes(n_layers=12)
    shapes.update({f"model.layers.{i}.mlp.extra_proj.weight": (8, 16) for i in range(12)})
    with pytest.raises(UnknownArchitectureError) as info:
        resolve_architecture(list(shapes), {"model_type": "llama"}, shapes)
    message = str(info.value)
    assert "12 block weight(s)" in message and "... and 4 more" in message
    assert "model.layers.7.mlp.extra_proj.weight" in message
    assert "model.layers.8.mlp.extra_proj.weight" not in message


def test_a_tensor_of_unknown_shape_counts_as_a_weight():
    shapes = block_shapes()
    names = [*shapes, "model.layers.0.mlp.extra_proj.weight"]
    with pytest.raises(UnknownArchitectureError, match=r"extra_proj\.weight  shape=unknown"):
        resolve_architecture(names, {}, shapes)


def test_blocks_past_num_hidden_layers_are_not_checked():
    shapes = block_shapes(n_layers=3)  # layer 2 plays an MTP block with its own weights
    shapes["model.layers.2.eh_proj.weight"] = (16, 32)
    arch = resolve_architecture(list(shapes), {"num_hidden_layers": 2}, shapes)
    assert arch.n_layers == 2
    with pytest.raises(UnknownArchitectureError, match="eh_proj"):
        resolve_architecture(list(shapes), {}, shapes)


def test_a_scheme_that_accounts_for_everything_wins_a_tie():
    # GPT-OSS without a model_type: mixtral (registered first) maps as many
    # tensors but not the experts' biases; gpt_oss accounts for them all.
    shapes = block_shapes(n_layers=2)
    for i in range(2):
        p = f"model.layers.{i}."
        for name in [n for n in shapes if n.startswith(p + "mlp.")]:
            del shapes[name]
        shapes.update({p + "mlp.router.weight": (4, 16),
                       p + "mlp.experts.gate_up_proj": (4, 16, 48),
                       p + "mlp.experts.gate_up_proj_bias": (4, 48),
                       p + "mlp.experts.down_proj": (4, 24, 16),
                       p + "mlp.experts.down_proj_bias": (4, 16)})
    assert resolve_architecture(list(shapes), {"hidden_size": 16}, shapes).name == "gpt_oss"


def test_cell_tensors_name_the_matrices_of_every_cell(tiny_llama):
    sig = compute_signature(tiny_llama, cache=None, progress=False)
    cells = sig.cell_tensors()
    assert cells[("q", 0)] == ("model.layers.0.self_attn.q_proj.weight",)
    assert len(cells) == 7 * sig.n_layers
    assert sorted(label for labels in cells.values() for label in labels) == sorted(
        entry.label for entry in sig.entries)
    assert sig.missing_layers() == {}


PROBES = ("weight", "foo.weight", "mlp.foo.weight", "self_attn.foo_proj.weight",
          "mlp.experts.0.foo.weight", "layers.foo")


@pytest.mark.parametrize("name", list_naming_schemes())
def test_built_in_skips_are_specific(name):
    scheme = get_naming_scheme(name)
    keys = [key.replace("{expert}", "0") for key in scheme.modules]
    assert not [key for key in keys if scheme.skips(key)], "a skip pattern hides a role matrix"
    assert not [probe for probe in PROBES if scheme.skips(probe)], "a skip pattern is a catch-all"
    for pattern in scheme.skip:
        re.compile(pattern)


def test_no_warning_for_a_clean_checkpoint(tiny_llama):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_signature(tiny_llama, cache=None, progress=False)
