"""What the estimators over flattened signatures share.

The kernel and ``n_modules`` parameter constraints (built from
:data:`sklearn_specsig.kernels.KERNELS`, so that a kernel added there is
accepted by every estimator and by the command line at once), the one
validation of ``X`` at an estimator's boundary, and the ``allow_nan`` tag.

Nothing here imports torch: only the transformer's ``fit`` and
``transform`` need it (``docs/design.md``, "Layers").
"""

from contextlib import contextmanager
from numbers import Integral

import numpy as np
from sklearn import config_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data

from ..kernels import KERNELS
from ..signature import check_n_modules

__all__ = [
    "KERNEL_CONSTRAINT",
    "N_MODULES_CONSTRAINT",
    "SignatureInputMixin",
    "validate_signatures",
    "validated_inputs",
]

#: ``kernel=``: a name of :data:`~sklearn_specsig.kernels.KERNELS` or a
#: callable ``kernel(X, Y, **kernel_params)``.
KERNEL_CONSTRAINT = [StrOptions(set(KERNELS)), callable]

#: ``n_modules=``: module rows of a flattened signature.
N_MODULES_CONSTRAINT = [Interval(Integral, 1, None, closed="left")]


def validate_signatures(estimator, X, y="no_validation", *, reset, **check_y_params):
    """Validate flattened signatures at an estimator's boundary, once.

    :func:`~sklearn.utils.validation.validate_data` as float64 with NaN
    allowed (a module row an architecture lacks), then the layout check
    :func:`~sklearn_specsig.signature.check_n_modules` with the estimator's
    ``n_modules``.

    Parameters
    ----------
    estimator : estimator with an ``n_modules`` parameter
    X : array-like of shape (n_samples, n_modules * n_layers)
    y : array-like or "no_validation", default="no_validation"
        Validated with ``X`` when given (``check_y_params`` are passed on).
    reset : bool
        True in ``fit`` (records ``n_features_in_``), False after.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        Or ``(X, y)`` when ``y`` is given.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig import LineageClassifier
    >>> from sklearn_specsig.estimators._base import validate_signatures
    >>> validate_signatures(LineageClassifier(n_modules=2), [[1, 2, np.nan, 4]],
    ...                     reset=True)
    array([[ 1.,  2., nan,  4.]])
    >>> validate_signatures(LineageClassifier(), np.zeros((1, 8)), reset=True)
    Traceback (most recent call last):
    ...
    ValueError: X has 8 features, which do not split into n_modules=7 module rows \
of equal depth; pass the n_modules the signatures were built with (7 for \
SpectralSignatureTransformer output, 1 for a generic array).
    """
    out = validate_data(estimator, X, y, reset=reset, ensure_all_finite="allow-nan",
                        dtype=np.float64, **check_y_params)
    X_valid = out[0] if isinstance(out, tuple) else out
    check_n_modules(X_valid.shape[1], estimator.n_modules)
    return out


@contextmanager
def validated_inputs(kernel):
    """Run a named kernel on arrays that :func:`validate_signatures` has checked.

    The kernels (and :class:`~sklearn_specsig.search.SignatureIndex`) check
    their inputs for direct callers; inside an estimator those arrays are
    the validated query and the references validated at ``fit``, so the
    second pass over them for infinities is skipped (``assume_finite``: the
    float64 arrays are then passed through without a copy or a scan).  A
    callable ``kernel`` is the user's code, which may rely on scikit-learn's
    own checks (``Input contains NaN``): it runs with them in force.

    Parameters
    ----------
    kernel : str or callable
        The estimator's ``kernel``.
    """
    if callable(kernel):
        yield
        return
    with config_context(assume_finite=True):
        yield


class SignatureInputMixin:
    """Mixin of the estimators whose ``X`` is flattened signatures.

    Sets the ``allow_nan`` input tag: NaN marks a module row (or a layer)
    a model lacks, and every kernel compares a pair on what both have.
    Put it left of the scikit-learn mixins and ``BaseEstimator``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
