"""Spectra and weight edits behind :func:`sklearn_specsig.datasets.make_model_zoo`.

Private helpers, kept apart from the checkpoint layout code so that the
numerical recipe (what a "family" and a "fine-tune" look like spectrally) can
be read and tested on its own.  Everything here works in float64 NumPy with an
explicit :class:`numpy.random.RandomState`; casting to the storage dtype
happens only when the checkpoint is written.
"""

import numpy as np
from scipy.stats import spearmanr

from .signature import ROLES

# A candidate family profile is rejected when its mean (over roles) Spearman
# correlation with an already drawn family exceeds this; it keeps families
# apart by construction instead of by luck of the draw.
_MAX_BETWEEN_FAMILY_SPEARMAN = 0.3
_MAX_PROFILE_DRAWS = 50


def _smooth_curve(n_layers, rng):
    """A smooth random curve on relative depth, min-max scaled to [0, 1].

    A short random cosine series (three harmonics with 1/k amplitude decay):
    smooth like the depth trends of trained LLMs, yet with a random ordering
    of layers, which is all that a Spearman comparison looks at.
    """
    t = np.linspace(0.0, 1.0, n_layers)
    curve = np.zeros(n_layers)
    for k in range(1, 4):
        curve += rng.normal() / k * np.cos(np.pi * k * t + rng.uniform(0, 2 * np.pi))
    span = np.ptp(curve)
    if span == 0:  # only reachable for n_layers == 1
        return np.full(n_layers, 0.5)
    return (curve - curve.min()) / span


def _draw_profile(n_layers, rng):
    """Target alphas of one family, shape (7, n_layers), within [2, 6]."""
    profile = np.empty((len(ROLES), n_layers))
    for r in range(len(ROLES)):
        low = rng.uniform(2.0, 3.0)
        high = rng.uniform(max(low + 1.5, 4.5), 6.0)
        profile[r] = low + (high - low) * _smooth_curve(n_layers, rng)
    return profile


def _mean_spearman(a, b):
    """Mean over roles of the Spearman correlation of two (7, L) profiles."""
    return float(np.mean([spearmanr(x, y)[0] for x, y in zip(a, b)]))


def draw_family_profiles(n_families, n_layers, rng):
    """Target alpha profiles, one (7, n_layers) array per family.

    Each new family is redrawn (up to a fixed number of times, keeping the
    least similar candidate) until its depth ordering is far from every
    earlier family's, so lineage is recoverable from the ordering alone.
    """
    profiles = []
    for _ in range(n_families):
        best, best_score = None, np.inf
        for _ in range(_MAX_PROFILE_DRAWS):
            candidate = _draw_profile(n_layers, rng)
            if n_layers < 3 or not profiles:
                best = candidate
                break
            score = max(_mean_spearman(candidate, p) for p in profiles)
            if score < best_score:
                best, best_score = candidate, score
            if score <= _MAX_BETWEEN_FAMILY_SPEARMAN:
                break
        profiles.append(best)
    return profiles


def hill_alpha(eigenvalues):
    """PL_Alpha_Hill of ascending eigenvalues (x_min = the median, included).

    Same convention as ``spectral.alpha_hill`` (``docs/design.md``), written
    again here, independently, for the zoo generator: ``i = N // 2``,
    ``alpha = 1 + (N - i) / sum(log(lam[i:] / lam[i]))``.
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    i = lam.size // 2
    return 1.0 + (lam.size - i) / np.sum(np.log(lam[i:] / lam[i]))


def power_law_spectrum(n, alpha, rng):
    """``n`` ascending eigenvalues whose Hill alpha is exactly ``alpha``.

    Eigenvalues are power-law quantiles ``lam_j = (1 - u_j) ** (-s)`` at
    jittered plotting positions ``u_j = (j + U_j) / (n + 1)``, ``U_j`` uniform
    in [0.1, 0.9].  Every log-ratio in the Hill sum is then proportional to
    ``s``, so ``s`` is solved in closed form for the requested alpha instead
    of relying on the asymptotic ``s = 1 / (alpha - 1)``, which is biased
    for the few dozen eigenvalues of a tiny matrix.
    """
    u = (np.arange(n) + rng.uniform(0.1, 0.9, size=n)) / (n + 1)
    g = -np.log1p(-u)  # increasing, so lam is ascending
    i = n // 2
    log_ratio_sum = np.sum(g[i:] - g[i])
    s = (n - i) / ((alpha - 1.0) * log_ratio_sum)
    return np.exp(s * (g - g[-1]))  # largest eigenvalue 1: no overflow


def _random_orthonormal(n_rows, n_cols, rng):
    """Haar-distributed ``n_rows x n_cols`` matrix with orthonormal columns."""
    q, r = np.linalg.qr(rng.standard_normal((n_rows, n_cols)))
    return q * np.sign(np.diag(r))  # sign fix makes the QR draw Haar


def base_matrix(n_out, n_in, alpha, rng):
    """A weight matrix ``U diag(sqrt(lam)) V^T`` with a prescribed Hill alpha.

    ``U`` and ``V`` are random orthonormal frames, so the entries look
    Gaussian-like while the spectrum is exactly the power law.  The overall
    scale is random (entry RMS log-normal around 0.02, like real LLM
    weights): alpha ignores it, and scale-based metrics must not get a free
    family signal from it.
    """
    n = min(n_out, n_in)
    lam = power_law_spectrum(n, alpha, rng)
    u = _random_orthonormal(n_out, n, rng)
    v = _random_orthonormal(n_in, n, rng)
    w = (u * np.sqrt(lam)) @ v.T
    rms = 0.02 * np.exp(0.3 * rng.standard_normal())
    return w * (rms / np.sqrt(np.mean(w**2)))


def draw_edit(rng):
    """The fine-tuning recipe of one derived model, as a plain dict.

    Each derived model gets its own mixture of edits (at least one).  Zero
    means "not applied"; the ranges stay in the regime where the paper finds
    spectral shape stable.
    """
    while True:
        edit = {
            "lora_rank": int(rng.randint(2, 5)) if rng.uniform() < 0.7 else 0,
            "lora_relative_norm": float(rng.uniform(0.01, 0.05)),
            "noise_gamma": float(rng.uniform(0.02, 0.1)) if rng.uniform() < 0.7 else 0.0,
            "prune_fraction": float(rng.uniform(0.02, 0.1)) if rng.uniform() < 0.5 else 0.0,
        }
        if edit["lora_rank"] or edit["noise_gamma"] or edit["prune_fraction"]:
            break
    if not edit["lora_rank"]:
        edit["lora_relative_norm"] = 0.0
    return edit


def apply_edit(w, edit, rng):
    """Apply a :func:`draw_edit` recipe to one base matrix (float64 copy).

    In order: a LoRA-like update ``B @ A`` of the given rank, scaled to a
    fraction of ``||W||_F``; Gaussian noise ``gamma * std(W) * Z`` (paper
    Eq. 11); magnitude pruning of the smallest ``|w|`` entries.
    """
    w = np.array(w, dtype=np.float64)
    if edit["lora_rank"]:
        b = rng.standard_normal((w.shape[0], edit["lora_rank"]))
        a = rng.standard_normal((edit["lora_rank"], w.shape[1]))
        delta = b @ a
        w += delta * (edit["lora_relative_norm"] * np.linalg.norm(w) / np.linalg.norm(delta))
    if edit["noise_gamma"]:
        w += edit["noise_gamma"] * w.std() * rng.standard_normal(w.shape)
    if edit["prune_fraction"]:
        threshold = np.quantile(np.abs(w), edit["prune_fraction"])
        w[np.abs(w) <= threshold] = 0.0
    return w
