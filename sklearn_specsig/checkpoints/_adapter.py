"""PEFT LoRA adapters, read as the merged model ``W + s * B A``.

An adapter folder (``adapter_config.json`` with ``adapter_model.safetensors``
or ``adapter_model.bin``) is wrapped around the reader of its base model:
names, shapes and configuration are the base's, and each tensor the
adapter touches is merged as it is read, one matrix at a time; the merged
model is never held in memory.  The merge is peft's ``merge_and_unload``:
the delta ``B @ A * scaling`` in float32 (peft's own CPU rule for half
precision adapters), added to the base tensor and cast back to the base
dtype.  An untouched tensor is the base's own, bit for bit, so its spectrum
is the base's cached one.
"""

import math
import re
from pathlib import Path

from ..errors import CheckpointFormatError, CheckpointNotFoundError
from ._base import Checkpoint, read_json
from ._pytorch import PytorchCheckpoint
from ._safetensors import SafetensorsCheckpoint

ADAPTER_CONFIG_NAME = "adapter_config.json"
_PREFIX = "base_model.model."
_LORA_KEY = re.compile(
    r"(?P<module>.+)\.(?:lora_(?P<ab>[AB])\.weight|lora_embedding_(?P<emb>[AB])"
    r"|lora_B\.(?P<bias>bias))"
)
# Initialisations that rewrite the base weights themselves: the adapter is
# only meaningful on that rewritten base unless peft converted it on saving.
_BASE_REWRITING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")


def adapter_location(location, base, locate_base):
    """``location`` as an :class:`AdapterLocation` when it is a PEFT adapter.

    Parameters
    ----------
    location : CheckpointLocation
    base : str, path-like or None
        The base model given by the user (``base=``); wins over
        ``base_model_name_or_path``.
    locate_base : callable
        ``locate_checkpoint`` for the base (a path or a hub id, and a revision).

    Returns
    -------
    CheckpointLocation or AdapterLocation

    Raises
    ------
    ValueError
        ``base`` is given but ``location`` is not an adapter.
    """
    folder = location.path if location.path.is_dir() else location.path.parent
    config = folder / ADAPTER_CONFIG_NAME
    # The adapter's own weights decide: a folder that also holds a full
    # model (model.safetensors) beside a stray adapter_config.json is read
    # as that model (_locate_directory prefers adapter_model.* when both are
    # there).
    is_adapter = config.is_file() and location.file.name.startswith("adapter_model")
    if not is_adapter:
        if base is not None:
            raise ValueError(
                f"base={str(base)!r} is given but '{location.source}' is not a PEFT "
                f"adapter (no {ADAPTER_CONFIG_NAME} beside its weights); base= is "
                "for adapters only: leave it out for a full model."
            )
        return location
    return AdapterLocation(location.source, folder, location.file, config, base, locate_base)


class AdapterLocation:
    """Where a LoRA adapter and its base model are; nothing parsed.

    The base is located on first need (:meth:`files`, :meth:`open`), from
    ``base=`` or the adapter's ``base_model_name_or_path``.

    Attributes
    ----------
    source : str
    format : str
        ``"lora"``.
    path : pathlib.Path
        The adapter folder.
    file : pathlib.Path
        ``adapter_model.safetensors`` or ``adapter_model.bin``.
    config_file : pathlib.Path
        ``adapter_config.json``.
    """

    format = "lora"

    def __init__(self, source, path, file, config_file, base, locate_base):
        self.source = source
        self.path = Path(path)
        self.file = Path(file)
        self.config_file = Path(config_file)
        self._base = base
        self._locate_base = locate_base
        self._base_location = None
        self._config = None

    def __repr__(self):
        return f"AdapterLocation(source={self.source!r}, path='{self.path}')"

    def adapter_config(self):
        """The parsed ``adapter_config.json``, checked to be a mergeable LoRA."""
        if self._config is None:
            self._config = check_lora_config(read_json(self.config_file), self.config_file)
        return self._config

    def base_location(self):
        """The location of the base model (``base=`` wins over the config)."""
        if self._base_location is None:
            config = self.adapter_config()
            named = config.get("base_model_name_or_path")
            base = self._base if self._base is not None else named
            how = ("base=" if self._base is not None
                   else f"base_model_name_or_path in '{self.config_file}'")
            if not base:
                raise CheckpointNotFoundError(
                    f"The LoRA adapter '{self.source}' names no base model: "
                    f"base_model_name_or_path in '{self.config_file}' is {named!r}. Pass "
                    "the base model's path or hub id as base=."
                )
            revision = config.get("revision") if self._base is None else None
            try:
                location = self._locate_base(base, revision=revision)
            except (CheckpointNotFoundError, OSError) as exc:
                raise CheckpointNotFoundError(
                    f"The base model of the LoRA adapter '{self.source}', {str(base)!r} "
                    f"(from {how}), cannot be found: {exc} Pass the base model's "
                    "path or hub id as base= (it wins over base_model_name_or_path)."
                ) from exc
            if isinstance(location, AdapterLocation):
                raise CheckpointFormatError(
                    f"The base model of the LoRA adapter '{self.source}', {str(base)!r}, "
                    "is itself an adapter; merge it first and pass the merged model as base=."
                )
            self._base_location = location
        return self._base_location

    def files(self):
        """The adapter's config and weights, then every file of the base."""
        return [self.config_file, self.file, *self.base_location().files()]

    def file_stats(self):
        """``(absolute path, size, st_mtime_ns)`` of :meth:`files`: a changed
        adapter or a changed base misses the memo."""
        stats = []
        for file in self.files():
            st = file.stat()
            stats.append((str(file.absolute()), st.st_size, st.st_mtime_ns))
        return stats

    def open(self):
        """The :class:`AdapterCheckpoint` (parses the headers of both)."""
        config = self.adapter_config()
        base = self.base_location().open()
        cls = SafetensorsCheckpoint if self.file.suffix == ".safetensors" else PytorchCheckpoint
        weights = cls(self.source, self.path, self.file, {}, None)
        return AdapterCheckpoint(self.source, self.path, config, self.config_file,
                                 weights, base)


def check_lora_config(config, file):
    """Refuse what a plain ``W + s * B A`` merge would get wrong; return ``config``.

    Parameters
    ----------
    config : dict
        A parsed ``adapter_config.json``.
    file : path-like
        Its file, named in the error.

    Returns
    -------
    dict

    Raises
    ------
    CheckpointFormatError
        Not a LoRA (IA3, prefix tuning, ...), DoRA, layer replication, LoRA on
        bare parameters, aLoRA, QALoRA, trainable tokens, or an initialisation
        that rewrote the base weights (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA).

    Examples
    --------
    >>> from sklearn_specsig.checkpoints._adapter import check_lora_config
    >>> check_lora_config({"peft_type": "LORA", "r": 8}, "adapter_config.json")["r"]
    8
    >>> check_lora_config({"peft_type": "LORA", "use_dora": True}, "a.json")
    Traceback (most recent call last):
    ...
    sklearn_specsig.errors.CheckpointFormatError: 'a.json' sets use_dora=True: DoRA \
rescales each merged column by a learned magnitude, so this adapter cannot be signed \
as W + s * B A. Merge it with peft (merge_and_unload), save the merged model and sign that.
    """
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise CheckpointFormatError(
            f"'{file}' is a PEFT {peft_type!r} adapter; only LoRA adapters (peft_type "
            "'LORA') can be signed. Merge it into its base with peft "
            "(merge_and_unload) and sign the merged model."
        )
    refused = {
        "use_dora": "DoRA rescales each merged column by a learned magnitude",
        "layer_replication": "layer replication changes the base's architecture",
        "target_parameters": "LoRA on bare parameters (MoE experts) is not read",
        "alora_invocation_tokens": "an activated LoRA cannot be merged",
        "use_qalora": "QALoRA merges into a quantized base",
        "use_bdlora": "block-diagonal LoRA is not read",
        "trainable_token_indices": "trainable token rows are not read",
    }
    for key, why in refused.items():
        if config.get(key):
            raise CheckpointFormatError(
                f"'{file}' sets {key}={config[key]!r}: {why}, so this adapter cannot be "
                "signed as W + s * B A. Merge it with peft (merge_and_unload), save "
                "the merged model and sign that."
            )
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_BASE_REWRITING_INITS):
        raise CheckpointFormatError(
            f"'{file}' was initialised with init_lora_weights={init!r}, which rewrites "
            "the base weights: it is only valid on that rewritten base. Save it with "
            "peft's path_initial_model_for_weight_conversion (a plain LoRA of the "
            "original base), or sign the merged model."
        )
    return config


def _pattern_value(patterns, module, default):
    """peft's ``get_pattern_key``: the first key matching the end of ``module``."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


class AdapterCheckpoint(Checkpoint):
    """A base checkpoint with a LoRA adapter merged in as tensors are read.

    Parameters
    ----------
    source : str
    path : pathlib.Path
        The adapter folder.
    adapter_config : dict
        The parsed ``adapter_config.json``.
    config_file : pathlib.Path
    weights : Checkpoint
        The reader of ``adapter_model.safetensors`` / ``.bin``.
    base : Checkpoint
        The reader of the base model.

    Attributes
    ----------
    deltas : dict of str to tuple
        Base tensor name -> ``(A key, B key, scaling, transposed)``.
    replaced : dict of str to str
        Base tensor name -> adapter key of a whole replacement
        (``modules_to_save``, trained biases, saved embeddings).
    """

    format = "lora"

    def __init__(self, source, path, adapter_config, config_file, weights, base):
        # The config file is the adapter's; the weight files are the base's.
        super().__init__(source, path, [], base.config, config_file)
        self.adapter_config = adapter_config
        self._adapter_file = config_file
        self._weights = weights
        self.base = base
        self.deltas, self.replaced = self._map_keys()

    def _map_keys(self):
        cfg = self.adapter_config
        names = set(self.base.tensor_names())
        pairs, replaced, unmatched = {}, {}, []
        for key in self._weights.tensor_names():
            if not key.startswith(_PREFIX):
                unmatched.append(key)
                continue
            rest = key[len(_PREFIX):]
            if "lora_magnitude_vector" in rest:
                raise CheckpointFormatError(
                    f"'{self._weights.path}' holds DoRA magnitudes ({key!r}); DoRA "
                    "adapters cannot be signed as W + s * B A. Sign the merged model."
                )
            match = _LORA_KEY.fullmatch(rest)
            if match:
                module = match["module"]
                slot = "bias" if match["bias"] else ("emb" + match["emb"] if match["emb"]
                                                     else match["ab"])
                pairs.setdefault(module, {})[slot] = key
                continue
            target = rest.replace(".base_layer.", ".")
            if target in names:
                replaced[target] = key
            else:
                unmatched.append(key)
        deltas = {}
        for module, slots in pairs.items():
            embedding = "embA" in slots or "embB" in slots
            a, b = (slots.get("embA"), slots.get("embB")) if embedding else (
                slots.get("A"), slots.get("B"))
            name = module + ".weight"
            if a is None or b is None or name not in names:
                unmatched.append(a or b or slots.get("bias"))
                continue
            rank = _pattern_value(cfg.get("rank_pattern"), module, cfg.get("r"))
            alpha = _pattern_value(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha"))
            a_shape = tuple(self._weights.tensor_shape(a))
            b_shape = tuple(self._weights.tensor_shape(b))
            # peft: an embedding's delta is (B @ A).T, as is a Conv1D's
            # (fan_in_fan_out, GPT-2), stored (in, out).
            transposed = embedding or bool(cfg.get("fan_in_fan_out"))
            out_in = (b_shape[0], a_shape[1]) if len(a_shape) == len(b_shape) == 2 else None
            expected = tuple(self.base.tensor_shape(name))
            if (out_in is None or a_shape[0] != b_shape[1] or a_shape[0] != rank
                    or (out_in[::-1] if transposed else out_in) != expected):
                raise CheckpointFormatError(
                    f"LoRA factors of {name!r} in '{self._weights.path}' do not fit: A "
                    f"{self._weights.tensor_shape(a)}, B {self._weights.tensor_shape(b)}, "
                    f"rank {rank} in '{self._adapter_file}', base tensor {expected}. "
                    "Is this the adapter's base model? Pass the right one as base=."
                )
            scale = alpha / (math.sqrt(rank) if cfg.get("use_rslora") else rank)
            deltas[name] = (a, b, scale, transposed)
            if "bias" in slots:
                bias = module + ".bias"
                if bias not in names:
                    unmatched.append(slots["bias"])
                else:
                    deltas[bias] = (None, slots["bias"], scale, False)
        if unmatched:
            raise CheckpointFormatError(
                f"{len(unmatched)} tensor(s) of the LoRA adapter '{self.source}' match no "
                f"tensor of its base '{self.base.source}', e.g. {sorted(unmatched)[:4]}: "
                "is this the adapter's base model? Pass the right one as base=."
            )
        if not deltas and not replaced:
            raise CheckpointFormatError(
                f"The LoRA adapter '{self.source}' holds no LoRA factors; it would sign "
                "as its base unchanged."
            )
        return deltas, replaced

    def tensor_names(self):
        return self.base.tensor_names()

    def tensor_shape(self, name):
        return self.base.tensor_shape(name)

    def file_stats(self):
        """The adapter's config and weights, then the base's files."""
        return self._weights.file_stats() + super().file_stats() + self.base.file_stats()

    def _adapter_tensors(self, *keys):
        keys = [k for k in keys if k is not None]
        return dict(self._weights.iter_tensors(keys))

    def merged(self, name, tensor):
        """The base ``tensor`` named ``name`` with the adapter applied."""
        if name in self.replaced:
            new = self._adapter_tensors(self.replaced[name])[self.replaced[name]]
            if tuple(new.shape) != tuple(tensor.shape):
                raise CheckpointFormatError(
                    f"The LoRA adapter '{self.source}' replaces {name!r} with a tensor of "
                    f"shape {tuple(new.shape)}, not the base's {tuple(tensor.shape)}."
                )
            # A saved base layer (peft's embed_tokens.base_layer with a LoRA on
            # the embedding) is what the delta, if any, is added to.
            tensor = new
        if name not in self.deltas:
            return tensor
        a, b, scale, transposed = self.deltas[name]
        factors = self._adapter_tensors(a, b)
        if a is None:  # a lora_B bias
            delta = factors[b].float() * scale
        else:
            delta = factors[b].float() @ factors[a].float()
            delta = (delta.T if transposed else delta) * scale
        return (tensor.float() + delta).to(tensor.dtype)

    def iter_tensors(self, names=None):
        for name, tensor in self.base.iter_tensors(names):
            yield name, self.merged(name, tensor)
