"""Spectra of weight matrices and the metrics computed from them.

Pure functions, no I/O.  A *spectrum* is the ascending array of eigenvalues
of the smaller Gram matrix of a weight matrix ``W`` (``W Wᵀ`` or ``Wᵀ W``),
i.e. the squared singular values of ``W``.  Every metric is a cheap function
of a spectrum, so changing the metric never re-reads a model.

Precision
---------
The default path forms the Gram matrix in float32 with BLAS ``syrk`` (half
the flops of a general product) and asks LAPACK for eigenvalues only, at
about a quarter of the cost of a float64 SVD.  The promise: PL_Alpha_Hill
within 1e-5 (relative) of the float64 reference (:func:`reference_spectrum`).
float32 keeps it while x_min, the median eigenvalue, is large next to
lambda_max; a matrix whose spectrum spans more than that
(``eps32 * lambda_max / x_min > X_MIN_FLOAT32_LIMIT``, about 840x, as in
real attention matrices with outlier directions) is solved again in
float64, and its eigenvalues keep what float64 resolved.  Measured against
float64 SVD for planted outliers of lambda_max / median from 1e2 to 1e6 in
``tests/test_spectral.py``.  ``precision="float64"`` solves everything in
float64.
"""

import math
import warnings

import numpy as np
import scipy.linalg
import torch
from scipy.linalg.blas import dsyrk, ssyrk

from .errors import SpectralWarning

__all__ = [
    "METRICS",
    "alpha_hill",
    "alpha_weighted",
    "compute_metric",
    "log_alpha_norm",
    "log_norm",
    "log_spectral_norm",
    "reference_spectrum",
    "resolve_device",
    "spectra",
    "spectral_norm",
    "spectrum",
    "stable_rank",
]

_PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device="auto"):
    """Return the :class:`torch.device` that ``device`` names.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"} or str or torch.device, default="auto"
        ``"auto"`` picks CUDA when a GPU is visible, else the CPU.

    Returns
    -------
    torch.device

    Examples
    --------
    >>> from sklearn_specsig.spectral import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a device torch knows; use 'auto', 'cpu' "
            "or 'cuda'."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' was asked for but torch sees no CUDA GPU; use "
            "device='auto' to fall back to the CPU."
        )
    return resolved


def _check_precision(precision):
    if precision not in _PRECISIONS:
        raise ValueError(
            f"precision={precision!r} is not supported; use one of "
            f"{sorted(_PRECISIONS)}."
        )
    return _PRECISIONS[precision]


def _as_2d(matrix, name):
    if matrix.ndim != 2:
        raise ValueError(
            f"{name}: a spectrum needs a 2-D matrix, got shape "
            f"{tuple(matrix.shape)}; split 3-D expert stacks first."
        )
    return matrix


def _cpu_spectra(matrices, dtype):
    """Eigenvalues on the CPU: BLAS syrk for the Gram, LAPACK ``syevd``."""
    syrk = ssyrk if dtype == torch.float32 else dsyrk
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    out = []
    for matrix in matrices:
        w = matrix.detach().to(device="cpu", dtype=dtype).numpy()
        # ``w.T`` of a C-ordered array is Fortran-ordered: BLAS reads it
        # without a copy.  trans=1 gives w @ w.T, trans=0 gives w.T @ w.
        w_t = np.asarray(w.T, dtype=np_dtype)
        gram = syrk(1.0, w_t, trans=1 if w.shape[0] <= w.shape[1] else 0, lower=1)
        if not np.isfinite(np.diagonal(gram)).all():
            out.append(_non_finite(gram.shape[0], np_dtype))
            continue
        eig = scipy.linalg.eigh(
            gram,
            eigvals_only=True,
            lower=True,
            driver="evd",
            overwrite_a=True,
            check_finite=False,
        )
        out.append(eig)
    return out


def _torch_spectra(matrices, dtype, device):
    """Eigenvalues with torch on ``device``, one batched solve per call."""
    stack = torch.stack([m.detach().to(device=device, dtype=dtype) for m in matrices])
    if stack.shape[1] <= stack.shape[2]:
        gram = stack @ stack.transpose(1, 2)
    else:
        gram = stack.transpose(1, 2) @ stack
    finite = torch.isfinite(torch.diagonal(gram, dim1=1, dim2=2)).all(dim=1).cpu()
    # A NaN or Inf weight makes its row's (or column's) diagonal entry of
    # the Gram non-finite: solve only the finite matrices.
    eig = torch.full(gram.shape[:2], float("nan"), dtype=dtype)
    if bool(finite.any()):
        eig[finite] = torch.linalg.eigvalsh(gram[finite.to(gram.device)]).cpu()
    return list(eig.numpy())


def _non_finite(n, np_dtype):
    return np.full(n, np.nan, dtype=np_dtype)


def spectra(matrices, *, device="cpu", precision="float32"):
    """Spectra of several matrices of one shape, solved together.

    Parameters
    ----------
    matrices : sequence of torch.Tensor or ndarray
        2-D matrices that all have the same shape.
    device : str or torch.device, default="cpu"
        Where to compute; ``"auto"`` uses CUDA when present.  On CUDA the
        matrices are solved as one batch.
    precision : {"float32", "float64"}, default="float32"
        Floating type of the Gram matrix and of the eigensolver.

    Returns
    -------
    list of ndarray
        One ascending float32 array (float64 with ``precision="float64"``)
        of ``min(out, in)`` non-negative eigenvalues per matrix; all NaN for
        a matrix with a NaN or Inf weight (detected on the Gram's diagonal,
        where every weight lands, at no extra pass over the weights).
    """
    dtype = _check_precision(precision)
    device = resolve_device(device)
    tensors = [_as_2d(torch.as_tensor(m), "matrix") for m in matrices]
    if not tensors:
        return []
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"spectra() batches one shape at a time, got {sorted(shapes)}.")
    if 0 in tensors[0].shape:
        # An empty matrix has an empty spectrum; BLAS would reject the call
        # (and some builds abort the process on it).
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        return [np.empty(0, dtype=np_dtype) for _ in tensors]
    eigs = _solve(tensors, dtype, device)
    out = []
    for i, eig in enumerate(eigs):
        eig = np.asarray(eig)
        if np.isnan(eig).any():
            out.append(eig)
            continue
        if dtype == torch.float32 and _x_min_unresolved(eig, tensors[i].shape):
            # float32 cannot give x_min, the median eigenvalue, to the stated
            # accuracy: solve this matrix again in float64.  The float64
            # eigenvalues are cleaned with float64's tolerance and only then
            # stored as float32 (a cast keeps 1e-8 relative, not a zero).
            eig64 = _solve([tensors[i]], torch.float64, device)[0]
            eig = _zero_below_tolerance(np.asarray(eig64), tensors[i].shape).astype(np.float32)
        else:
            eig = _zero_below_tolerance(eig, tensors[i].shape)
        out.append(eig)
    return out


def _solve(tensors, dtype, device):
    if device.type == "cpu":
        return _cpu_spectra(tensors, dtype)
    return _torch_spectra(tensors, dtype, device)


def _tolerance(eig, shape, float_type):
    # Eigenvalues of a Gram matrix are exact only to about
    # eps * lambda_max per dimension (numpy.linalg.matrix_rank's rule).
    top = float(eig[-1]) if eig.size else 0.0
    return max(top, 0.0) * max(shape) * np.finfo(float_type).eps


#: Largest ``eps32 * lambda_max / x_min`` solved in float32.  An eigenvalue
#: of a float32 Gram is off by about ``c * eps32 * lambda_max`` in absolute
#: terms, with ``c <= 0.05`` measured for random and planted-outlier
#: matrices of 256 to 4096 rows (tests/test_spectral.py), and PL_Alpha_Hill
#: moves by about the relative error of x_min; 1e-4 keeps it within 5e-6,
#: inside the promised 1e-5.  It sends matrices whose spectrum spans more
#: than ~840x from x_min to lambda_max (attention sinks, massive
#: activations) to float64, and no Marchenko-Pastur-like random matrix.
X_MIN_FLOAT32_LIMIT = 1e-4


def _x_min_unresolved(eig, shape):
    """Whether float32 eigenvalues leave x_min = eig[N // 2] in doubt: below
    float32's rank tolerance, or too small next to lambda_max for the
    relative accuracy PL_Alpha_Hill is promised."""
    if eig.size <= 1:
        return False
    x_min, top = float(eig[eig.size // 2]), float(eig[-1])
    if x_min <= _tolerance(eig, shape, np.float32):
        return True
    return np.finfo(np.float32).eps * top > X_MIN_FLOAT32_LIMIT * x_min


def _zero_below_tolerance(eig, shape):
    """Clamp eigenvalues that rounding made tiny or negative to exact zero,
    so a rank-deficient matrix (a LoRA delta) is recognised as such."""
    float_type = np.float64 if eig.dtype == np.float64 else np.float32
    tol = _tolerance(eig, shape, float_type)
    return np.where(eig > tol, eig, 0.0).astype(eig.dtype)


def spectrum(matrix, *, device="cpu", precision="float32"):
    """Ascending eigenvalues of the smaller Gram matrix of ``matrix``.

    Parameters
    ----------
    matrix : torch.Tensor or ndarray of shape (out, in)
        The weight matrix, used as stored: no scaling, no centering.
    device : str or torch.device, default="cpu"
        Where to compute; ``"auto"`` uses CUDA when present.
    precision : {"float32", "float64"}, default="float32"
        Floating type of the Gram matrix and of the eigensolver.

    Returns
    -------
    ndarray of shape (min(out, in),)
        Non-negative eigenvalues in ascending order: the squared singular
        values of ``matrix``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.spectral import spectrum
    >>> spectrum(np.diag([1.0, 2.0, 3.0])).round(6)
    array([1., 4., 9.], dtype=float32)
    """
    return spectra([matrix], device=device, precision=precision)[0]


def reference_spectrum(matrix):
    """Float64 reference spectrum: numpy's ``eigvalsh`` of the float64 Gram.

    Parameters
    ----------
    matrix : torch.Tensor or ndarray of shape (out, in)

    Returns
    -------
    ndarray of shape (min(out, in),), float64
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().to(torch.float64).numpy()
    w = np.asarray(matrix, dtype=np.float64)
    _as_2d(w, "matrix")
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return _zero_below_tolerance(np.linalg.eigvalsh(gram), w.shape)


# --------------------------------------------------------------------------
# Metrics of a spectrum.  Each takes the ascending eigenvalues and an
# optional ``name`` used only in warnings.


def _undefined(metric, name, reason):
    warnings.warn(
        f"{metric} is undefined for {name or 'a matrix'} ({reason}); "
        "its value is NaN.",
        SpectralWarning,
        stacklevel=3,
    )
    return math.nan


def _as_spectrum(eigenvalues, metric, name):
    """Sorted float64 copy of a spectrum, or None (with a warning) when it
    holds NaN or Inf, as it does for a matrix with non-finite weights."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1:
        raise ValueError(f"a spectrum is a 1-D array, got shape {lam.shape}.")
    if not np.isfinite(lam).all():
        _undefined(metric, name, "its weights or eigenvalues are NaN or Inf")
        return None
    return np.sort(np.clip(lam, 0.0, None))


def alpha_hill(eigenvalues, *, name=None, convention="net_esd"):
    """PL_Alpha_Hill, the Hill estimate of the power-law tail index.

    With the ``N`` ascending eigenvalues λ, ``i = N // 2`` and
    ``x_min = λ[i]``, the tail is ``λ[i:]`` (``n = N - i`` values, ``x_min``
    included) and ``α = 1 + n / Σ ln(λ[j] / x_min)``.  This is
    ``net_esd_estimator(fix_fingers="xmin_mid")``, the code of the paper's
    group, and the library's definition.

    Parameters
    ----------
    eigenvalues : array-like of shape (N,)
        A spectrum (any order).
    name : str, optional
        Tensor name used in the warning when α is undefined.
    convention : {"net_esd", "paper"}, default="net_esd"
        ``"paper"`` follows Eq. 1 of the paper literally: ``k = N // 2`` top
        eigenvalues, ``x_min = λ[N - k - 1]``, one rank *below* the tail and
        not part of it.  The two differ slightly; ``"net_esd"`` is the
        reference.

    Returns
    -------
    float
        α, or NaN (with a :class:`~sklearn_specsig.errors.SpectralWarning`)
        when ``N <= 1``, ``x_min <= 0`` (rank below ``N / 2``, e.g. a LoRA
        delta or an all-zero matrix) or the tail is flat.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig.spectral import alpha_hill
    >>> lam = np.array([1.0, 1.0, np.e, np.e ** 2])
    >>> float(alpha_hill(lam))  # tail [e, e^2] over x_min = e: 1 + 2 / 1
    3.0
    """
    lam = _as_spectrum(eigenvalues, "alpha_hill", name)
    if lam is None:
        return math.nan
    n_eig = lam.size
    if n_eig <= 1:
        return _undefined("alpha_hill", name, f"{n_eig} eigenvalue(s)")
    if convention == "net_esd":
        i = n_eig // 2
        tail = lam[i:]
        x_min = lam[i]
    elif convention == "paper":
        k = n_eig // 2
        tail = lam[n_eig - k :]
        x_min = lam[n_eig - k - 1]
    else:
        raise ValueError(f"convention={convention!r}; use 'net_esd' or 'paper'.")
    if not x_min > 0.0:
        return _undefined(
            "alpha_hill", name, "x_min is zero: the matrix has rank below N/2"
        )
    log_sum = float(np.sum(np.log(tail / x_min)))
    if not log_sum > 0.0 or not math.isfinite(log_sum):
        return _undefined("alpha_hill", name, "the tail of the spectrum is flat")
    return 1.0 + tail.size / log_sum


def _log10_positive(value, metric, name):
    if not value > 0.0:
        return _undefined(metric, name, "the matrix is all zeros")
    return math.log10(value)


def log_norm(eigenvalues, *, name=None):
    """``log10 Σλ``, the log of the squared Frobenius norm."""
    lam = _as_spectrum(eigenvalues, "log_norm", name)
    if lam is None:
        return math.nan
    return _log10_positive(float(np.sum(lam)), "log_norm", name)


def spectral_norm(eigenvalues, *, name=None):
    """``λ_max``, the largest eigenvalue (the squared largest singular value)."""
    lam = _as_spectrum(eigenvalues, "spectral_norm", name)
    if lam is None:
        return math.nan
    if lam.size == 0:
        return _undefined("spectral_norm", name, "empty spectrum")
    return float(lam[-1])


def log_spectral_norm(eigenvalues, *, name=None):
    """``log10 λ_max``."""
    lam = _as_spectrum(eigenvalues, "log_spectral_norm", name)
    if lam is None:
        return math.nan
    return _log10_positive(float(lam[-1]) if lam.size else 0.0, "log_spectral_norm", name)


def alpha_weighted(eigenvalues, *, name=None):
    """``α · log10 λ_max``, PL_Alpha_Hill weighted by the log spectral norm."""
    return alpha_hill(eigenvalues, name=name) * log_spectral_norm(eigenvalues, name=name)


def log_alpha_norm(eigenvalues, *, name=None):
    """``log10 Σ λ^α`` over all eigenvalues, with α = PL_Alpha_Hill."""
    alpha = alpha_hill(eigenvalues, name=name)
    if math.isnan(alpha):
        return math.nan
    lam = _as_spectrum(eigenvalues, "log_alpha_norm", name)
    # Σ λ^α overflows float64 for large λ and α: sum in log space.
    log_terms = alpha * np.log10(lam[lam > 0.0])
    top = float(log_terms.max())
    return top + math.log10(float(np.sum(10.0 ** (log_terms - top))))


def stable_rank(eigenvalues, *, name=None):
    """``Σλ / λ_max``, the stable rank."""
    lam = _as_spectrum(eigenvalues, "stable_rank", name)
    if lam is None:
        return math.nan
    if lam.size == 0 or not lam[-1] > 0.0:
        return _undefined("stable_rank", name, "the matrix is all zeros")
    return float(np.sum(lam) / lam[-1])


METRICS = {
    "alpha_hill": alpha_hill,
    "log_norm": log_norm,
    "spectral_norm": spectral_norm,
    "log_spectral_norm": log_spectral_norm,
    "alpha_weighted": alpha_weighted,
    "log_alpha_norm": log_alpha_norm,
    "stable_rank": stable_rank,
}


def compute_metric(metric, eigenvalues, *, name=None):
    """Value of ``metric`` on a spectrum.

    Parameters
    ----------
    metric : str or callable
        A key of :data:`METRICS` or a callable ``f(eigenvalues) -> float``.
    eigenvalues : array-like of shape (N,)
    name : str, optional
        Tensor name used in warnings.

    Returns
    -------
    float
    """
    if callable(metric):
        return float(metric(np.asarray(eigenvalues)))
    try:
        function = METRICS[metric]
    except KeyError:
        raise ValueError(
            f"metric={metric!r} is unknown; use one of {sorted(METRICS)} or a "
            "callable taking the eigenvalues."
        ) from None
    return function(eigenvalues, name=name)
