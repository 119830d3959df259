"""Architectures refused by name: a clear "no" instead of a partial or guessed signature.

The spectral signature is defined for transformer blocks (the paper, Sec. 3):
each block's attention q, k, v, o and its MLP's gate, up, down.  Some
published architectures have blocks of another kind; :data:`NO_SIGNATURE`
names them with the reason, and
:func:`~sklearn_specsig.architectures.resolve_architecture` raises
:class:`~sklearn_specsig.errors.UnknownArchitectureError` with
:func:`no_signature_message` for them, unless a scheme is forced or a
registered scheme lists the model type (the user has said what plays which
role).
"""

# A selective state-space mixer (Mamba's in_proj, conv1d, x_proj, dt_proj,
# out_proj) has none of the seven roles: calling in_proj "up" or out_proj
# "o" would put its spectra in rows that other models fill with matrices of
# another function, and similarities with them would be guesses.  A hybrid
# whose blocks alternate mixers and attention would get a signature of its
# attention blocks only.
_SSM_MIXER = (
    "its blocks are selective state-space (Mamba) mixers: in_proj, conv1d, x_proj, "
    "dt_proj and out_proj are neither attention q/k/v/o nor an MLP's gate/up/down"
)
_SSM_HYBRID = (
    "it is a hybrid whose Mamba mixer blocks (in_proj, conv1d, out_proj) have no "
    "q/k/v/o/gate/up/down role, so a signature would describe its attention blocks "
    "only and leave the mixers out"
)
#: ``config["model_type"]`` or GGUF ``general.architecture`` -> why no
#: signature is computed for it.
NO_SIGNATURE = {
    **dict.fromkeys(("mamba", "mamba2", "falcon_mamba"), _SSM_MIXER),
    **dict.fromkeys(
        ("jamba", "bamba", "zamba", "zamba2", "falcon_h1", "falcon-h1", "nemotron_h",
         "granitemoehybrid", "granitehybrid"),
        _SSM_HYBRID,
    ),
}


def no_signature_message(model_type, reason):
    """Explain why an architecture is refused by name (:data:`NO_SIGNATURE`)."""
    return (
        f"No spectral signature for model_type={model_type!r}: {reason}. The signature "
        "(q, k, v, o, gate, up, down per block) is defined for transformer blocks, so "
        "this architecture is refused rather than given a partial or guessed one. To "
        "sign it anyway, register a NamingScheme with model_types="
        f"({model_type!r},) that states which matrices play which role, or pass scheme=."
    )
