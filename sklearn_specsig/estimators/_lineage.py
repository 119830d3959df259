"""LineageClassifier: which known base model does a model descend from?"""

import numbers
import warnings
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .._topk import top_k
from ..kernels import pairwise_similarity
from ..provenance import empirical_pvalue, null_similarities
from ._base import (
    KERNEL_CONSTRAINT,
    N_MODULES_CONSTRAINT,
    SignatureInputMixin,
    validate_signatures,
    validated_inputs,
)

__all__ = ["LineageClassifier"]


def _label_fits(label, classes):
    """Whether ``label`` can sit in an array of ``classes``' dtype unchanged."""
    kind = classes.dtype.kind
    if kind == "O":
        return True
    if kind in "US":
        return isinstance(label, (str, bytes))
    if kind in "iu":
        return isinstance(label, numbers.Integral) and not isinstance(label, (bool, np.bool_))
    if kind == "f":
        return isinstance(label, numbers.Real) and not isinstance(label, (bool, np.bool_))
    if kind == "b":
        return isinstance(label, (bool, np.bool_))
    return False


class LineageClassifier(SignatureInputMixin, ClassifierMixin, BaseEstimator):
    """Nearest-base lineage classifier over spectral signatures (paper Eq. 4).

    ``fit`` stores reference signatures of known lineage (base models, and
    optionally derived models: several references per family are allowed).
    A query is scored against every family by its best similarity to that
    family's references, and assigned the family of highest score,
    ``argmax_k max_{r in family k} Sim(z, r)``; with ``threshold`` set, a
    query whose best score is below it is answered ``unknown_label`` ("none
    of the known families": open-set rejection).

    ``fit`` also keeps the similarities of all pairs of references from
    *different* families: the null distribution behind :meth:`predict_pvalue`
    and :meth:`explain`, which say how unusual a query's similarity to a
    family is for an unrelated model (see :mod:`sklearn_specsig.provenance`).

    Works on flattened signatures from any source, e.g. after
    :class:`~sklearn_specsig.SpectralSignatureTransformer` in a Pipeline.

    Parameters
    ----------
    kernel : {"spearman", "rbf", "cosine"} or callable, default="spearman"
        Similarity of two flattened signatures, computed by
        :func:`sklearn_specsig.kernels.pairwise_similarity`: the paper's
        Spearman module similarity (Eq. 2), the RBF kernel (Eq. 6) or cosine
        similarity (Eq. 7); a callable ``kernel(X, Y, **kernel_params)``
        must return the ``(n_x, n_y)`` similarity matrix (larger = closer).
    threshold : float or None, default=None
        Open-set rejection: a query whose best family similarity is below
        ``threshold`` (or NaN: no module comparable) is predicted
        ``unknown_label``.  None never rejects.  The scale is the kernel's
        (Spearman: -1 to 1).
    n_modules : int, default=7
        Module rows of a flattened signature; the feature count must be a
        multiple of it.  ``n_modules=1`` treats a whole row as one profile.
    kernel_params : dict, default=None
        Extra keyword arguments of the kernel (e.g. the RBF bandwidth).
    unknown_label : scalar, default="unknown"
        Label of rejected queries.  With ``threshold`` set it must fit the
        dtype of the training labels and not be one of them: string labels
        take a string, integer labels an integer such as ``-1`` (a
        ``TypeError`` says so at ``fit`` otherwise, as scikit-learn's
        ``RadiusNeighborsClassifier`` does for ``outlier_label``), so that
        ``predict`` keeps the dtype of ``y``.
    temperature : float, default=0.1
        Temperature ``T`` of :meth:`predict_proba`'s softmax.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Family labels, sorted.
    references_ : ndarray of shape (n_references, n_features_in_)
        The reference signatures, in ``fit`` order.
    reference_labels_ : ndarray of shape (n_references,)
        Index into ``classes_`` of each reference.
    n_references_per_class_ : ndarray of shape (n_classes,)
        References of each family.
    null_similarities_ : ndarray of shape (n_null,)
        Sorted similarities of all reference pairs of different families
        (NaN pairs dropped); the smallest reachable p-value is
        ``1 / (1 + n_null)``.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` had string column names.

    See Also
    --------
    sklearn_specsig.provenance.lineage_pvalue : The p-value of one claimed
        (candidate, base) pair.
    sklearn_specsig.search.SignatureIndex : Top-k retrieval over a large zoo.

    Notes
    -----
    :meth:`predict_proba` is the softmax of the per-family similarities
    ``s_k`` at temperature ``T``: ``p_k = exp(s_k / T) / sum_j exp(s_j / T)``
    (NaN similarities count as ``-inf``; a row with none comparable is
    uniform).  It is monotone in each ``s_k``, sums to 1 over the *known*
    families (the rejection of ``threshold`` is not part of it) and agrees
    with :meth:`predict` without rejection.  It is a ranking score, not a
    calibrated probability: wrap the classifier in
    :class:`~sklearn.calibration.CalibratedClassifierCV` for calibration, or
    use :meth:`predict_pvalue` for evidence.

    :meth:`decision_function` follows scikit-learn's convention: for two
    classes it is the 1-D difference ``s_1 - s_0`` (positive for
    ``classes_[1]``); with three or more it is the ``(n, n_classes)`` matrix
    of per-family best similarities, which :meth:`similarity` returns for
    any number of classes.

    ``fit`` costs one ``(n_references, n_references)`` similarity matrix
    (for the null); prediction one ``(n_queries, n_references)``.  For
    retrieval over a zoo of many thousands of models use
    :class:`~sklearn_specsig.search.SignatureIndex`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_specsig import LineageClassifier
    >>> rng = np.random.default_rng(0)
    >>> bases = rng.normal(size=(3, 7 * 8))            # 3 families, 8 layers
    >>> clf = LineageClassifier(threshold=0.5).fit(bases, ["a", "b", "c"])
    >>> fine_tunes = bases + 0.05 * rng.normal(size=bases.shape)
    >>> clf.predict(fine_tunes).tolist()
    ['a', 'b', 'c']
    >>> clf.predict(rng.normal(size=(1, 56))).tolist()  # an unseen family
    ['unknown']
    >>> clf.similarity(fine_tunes).shape
    (3, 3)
    """

    _parameter_constraints = {
        "kernel": KERNEL_CONSTRAINT,
        "threshold": [Real, None],
        "n_modules": N_MODULES_CONSTRAINT,
        "kernel_params": [dict, None],
        "unknown_label": "no_validation",
        "temperature": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        kernel="spearman",
        *,
        threshold=None,
        n_modules=7,
        kernel_params=None,
        unknown_label="unknown",
        temperature=0.1,
    ):
        self.kernel = kernel
        self.threshold = threshold
        self.n_modules = n_modules
        self.kernel_params = kernel_params
        self.unknown_label = unknown_label
        self.temperature = temperature

    # -- validation -----------------------------------------------------

    def _check_unknown_label(self):
        label = self.unknown_label
        if not _label_fits(label, self.classes_):
            raise TypeError(
                f"unknown_label={label!r} does not fit the dtype of the "
                f"training labels ({self.classes_.dtype}): with threshold set, "
                "rejected queries would turn predict's output into another "
                "dtype. Pass an unknown_label of the labels' type, e.g. "
                "unknown_label=-1 for integer labels."
            )
        if np.any(self.classes_ == label):
            raise ValueError(
                f"unknown_label={label!r} is also a training label; choose a "
                "label that no family uses."
            )

    def _kernel(self, X, Y):
        # X and Y were validated at this estimator's boundary.
        with validated_inputs(self.kernel):
            return pairwise_similarity(X, Y, kernel=self.kernel, n_modules=self.n_modules,
                                       **(self.kernel_params or {}))

    # -- fit -------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Store the reference signatures and the null of unrelated pairs.

        Parameters
        ----------
        X : array-like of shape (n_references, n_modules * n_layers)
            Flattened signatures of models of known lineage (NaN allowed:
            a module row the architecture lacks).
        y : array-like of shape (n_references,)
            Family (lineage label) of each reference; a family may have
            several references.

        Returns
        -------
        self : LineageClassifier
        """
        X, y = validate_signatures(self, X, y, reset=True, y_numeric=False)
        check_classification_targets(y)
        self.classes_, self.reference_labels_ = np.unique(y, return_inverse=True)
        if self.threshold is not None:
            self._check_unknown_label()
        self.references_ = X
        self.n_references_per_class_ = np.bincount(self.reference_labels_,
                                                   minlength=len(self.classes_))
        # References grouped by class, for a per-family max by reduceat.
        self._order = np.argsort(self.reference_labels_, kind="stable")
        self._starts = np.r_[0, np.cumsum(self.n_references_per_class_)[:-1]]
        with validated_inputs(self.kernel):
            self.null_similarities_ = null_similarities(
                X, self.reference_labels_, kernel=self.kernel, n_modules=self.n_modules,
                kernel_params=self.kernel_params,
            )
        return self

    # -- scores ----------------------------------------------------------

    def similarity(self, X):
        """Best similarity of each query to each family's references.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)
            Flattened signatures.

        Returns
        -------
        S : ndarray of shape (n_queries, n_classes)
            ``S[i, k] = max_{r in family k} Sim(X[i], r)``; NaN where no
            reference of the family is comparable (no shared module row).
        """
        check_is_fitted(self)
        X = validate_signatures(self, X, reset=False)
        S = np.asarray(self._kernel(X, self.references_), dtype=np.float64)
        # fmax ignores NaN: a family is NaN only if all its references are.
        return np.fmax.reduceat(S[:, self._order], self._starts, axis=1)

    def decision_function(self, X):
        """Per-family similarity (scikit-learn's shape convention).

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)

        Returns
        -------
        scores : ndarray of shape (n_queries,) or (n_queries, n_classes)
            With two classes, ``similarity[:, 1] - similarity[:, 0]``
            (positive means ``classes_[1]``); otherwise the per-family best
            similarities of :meth:`similarity`.
        """
        S = self.similarity(X)
        if S.shape[1] == 2:
            return S[:, 1] - S[:, 0]
        return S

    def _best(self, S):
        filled = np.where(np.isnan(S), -np.inf, S)
        idx = np.argmax(filled, axis=1)
        return idx, filled[np.arange(S.shape[0]), idx]

    def predict(self, X):
        """Family of highest similarity, or ``unknown_label`` below ``threshold``.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)

        Returns
        -------
        y_pred : ndarray of shape (n_queries,)
            Labels of ``classes_``' dtype.
        """
        S = self.similarity(X)
        idx, best = self._best(S)
        y_pred = self.classes_.take(idx)
        none = ~np.isfinite(best)
        if self.threshold is None:
            if none.any():
                warnings.warn(
                    f"{int(none.sum())} queries share no comparable module row "
                    "with any reference (all similarities NaN); they get "
                    f"{self.classes_.tolist()[0]!r} by default. Set threshold to answer "
                    "unknown_label instead.",
                    UserWarning,
                    stacklevel=2,
                )
            return y_pred
        self._check_unknown_label()
        reject = ~(best >= self.threshold)
        # Same dtype whether or not this batch has a rejection.
        dtype = (object if self.classes_.dtype.kind == "O"
                 else np.result_type(self.classes_.dtype, np.asarray(self.unknown_label).dtype))
        out = y_pred.astype(dtype)
        out[reject] = self.unknown_label
        return out

    def predict_proba(self, X):
        """Softmax of the per-family similarities at ``temperature``.

        A monotone map of :meth:`similarity` that sums to 1 over the known
        families; a ranking score, not a calibrated probability (see Notes).

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)

        Returns
        -------
        proba : ndarray of shape (n_queries, n_classes)
        """
        S = self.similarity(X)
        Z = np.where(np.isnan(S), -np.inf, S) / self.temperature
        top = Z.max(axis=1, keepdims=True)
        none = ~np.isfinite(top[:, 0])
        E = np.exp(Z - np.where(np.isfinite(top), top, 0.0))
        E[none] = 1.0  # nothing comparable: uniform
        return E / E.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)

        Returns
        -------
        log_proba : ndarray of shape (n_queries, n_classes)
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    # -- evidence --------------------------------------------------------

    def predict_pvalue(self, X):
        """Empirical p-value of each query's similarity to each family.

        The p-value of ``s = similarity(X)[i, k]`` against the null of
        similarities between references of different families
        (``null_similarities_``): ``p = (1 + #{null >= s}) / (1 + n_null)``.
        When family ``k`` has ``m_k > 1`` references, ``s`` is a maximum of
        ``m_k`` similarities, so the pair p-value is Bonferroni-corrected:
        ``min(1, m_k * p)`` (conservative).  Small p: the query is more
        similar to the family than unrelated references are to each other.
        The smallest reachable value is ``1 / (1 + n_null)``; see
        :mod:`sklearn_specsig.provenance` for what the p-value can and
        cannot say.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)

        Returns
        -------
        pvalues : ndarray of shape (n_queries, n_classes)
            NaN where the similarity is NaN.
        """
        return self._pvalues(self.similarity(X))

    def _pvalues(self, S):
        p = empirical_pvalue(S, self.null_similarities_)
        return np.minimum(1.0, p * self.n_references_per_class_)

    def explain(self, X, n_families=3):
        """A table of the best families of each query, with p-values.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_queries, n_features_in_)
            Flattened signatures; a DataFrame's index (e.g. the model ids
            of ``SpectralSignatureTransformer().set_output(transform=
            "pandas")``) names the queries.
        n_families : int or None, default=3
            Families listed per query, most similar first; None lists all.

        Returns
        -------
        table : pandas.DataFrame
            One row per (query, family), columns ``query``, ``rank``
            (1 = predicted family), ``family``, ``similarity``, ``p_value``
            (:meth:`predict_pvalue`), ``n_null`` and ``accepted``
            (similarity at least ``threshold``; always True without one).
            Requires pandas.

        Notes
        -----
        A Pipeline does not forward ``explain``; call it on the last step
        with the signatures of the earlier ones:
        ``pipe[-1].explain(pipe[:-1].transform(paths))``.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_specsig import LineageClassifier
        >>> rng = np.random.default_rng(0)
        >>> refs = rng.normal(size=(12, 7 * 8))       # 12 unrelated bases
        >>> clf = LineageClassifier().fit(refs, [f"fam{i:02d}" for i in range(12)])
        >>> child = refs[3] + 0.05 * rng.normal(size=56)
        >>> print(clf.explain(child[None, :], n_families=3).round(3))
           query  rank family  similarity  p_value  n_null  accepted
        0      0     1  fam03       0.986    0.015      66      True
        1      0     2  fam08       0.241    0.060      66      True
        2      0     3  fam07       0.214    0.090      66      True

        12 families give 66 unrelated pairs, so the smallest p-value is
        1 / 67 = 0.015: fam03 gets it.
        """
        import pandas as pd

        index = getattr(X, "index", None)
        S = self.similarity(X)
        P = self._pvalues(S)
        n_q, n_c = S.shape
        k = n_c if n_families is None else max(1, min(int(n_families), n_c))
        sims, order = top_k(S, k)
        rows = np.repeat(np.arange(n_q), k)
        cols = order.ravel()
        sims = sims.ravel()
        queries = np.asarray(index)[rows] if index is not None else rows
        accepted = (np.ones(sims.shape, dtype=bool) if self.threshold is None
                    else sims >= self.threshold)
        return pd.DataFrame({
            "query": queries,
            "rank": np.tile(np.arange(1, k + 1), n_q),
            "family": self.classes_[cols],
            "similarity": sims,
            "p_value": P[rows, cols],
            "n_null": self.null_similarities_.size,
            "accepted": accepted,
        })
