"""Signing on a Dask cluster through joblib, with a shared cache (issue 5).

Nothing in the library knows about Dask: ``SpectralSignatureTransformer``
parallelises over models with joblib, so ``joblib.parallel_config(
backend="dask")`` sends the work to a ``dask.distributed`` cluster.  The
store is a path, so every worker writes to the same SQLite file.
"""

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from joblib import parallel_config

from sklearn_specsig import SignatureStore, SpectralSignatureTransformer


def test_signing_on_a_local_dask_cluster_equals_serial(small_zoo, tmp_path):
    serial = SpectralSignatureTransformer(cache=None).fit_transform(small_zoo.paths)
    shared = tmp_path / "shared-store"
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
        distributed.get_task_stream(client) as tasks,
        parallel_config(backend="dask"),
    ):
        Z = SpectralSignatureTransformer(cache=shared, n_jobs=-1).fit_transform(small_zoo.paths)
    workers = {t["worker"] for t in tasks.data}  # filled when the stream closes
    # Equal to the float32 tolerance of the engine, not bit for bit: the
    # workers' BLAS runs one thread (threads_per_worker=1), which sums the
    # Gram matrix in another order than the multi-threaded serial run.
    np.testing.assert_allclose(Z, serial, rtol=1e-5)
    # The work ran on the cluster's worker processes, and they all wrote to
    # the one shared store: every model is cached once.
    assert len(tasks.data) >= 1
    assert workers and all(w.startswith("tcp://") for w in workers)
    assert SignatureStore(shared).stats()["models"] == len(small_zoo.paths)
