"""Eigenvalue solvers: the spectrum of a weight matrix, on CPU or CUDA.

The only part of :mod:`sklearn_specsig.spectral` that needs torch and
BLAS; :mod:`._metrics` turns the spectra these return into numbers.

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


import numpy as np
import scipy.linalg
import torch
from scipy.linalg.blas import dsyrk, ssyrk

__all__ = [
    "X_MIN_FLOAT32_LIMIT",
    "reference_spectrum",
    "resolve_device",
    "spectra",
    "spectrum",
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
