"""Part 5 of the bad-input contract: property-based fuzzing.

Hypothesis writes arbitrary and mutated files for the safetensors-header,
shard-index and GGUF readers: whatever the bytes, a reader either returns
tensors that agree with what the file declares, or raises one of the
library's errors; never another exception, never a read outside the model
directory.  The estimators get arbitrary arrays: NaN, Inf, empty, single
samples, wrong widths, and answer with a clear ValueError or a sane result.

The coverage-guided counterpart (atheris, minutes per reader, not in CI) is
``benchmarks/fuzz_readers.py``.
"""

import json
import struct

import gguf
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from safetensors.torch import save_file
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_specsig import (
    KNNPerformanceRegressor,
    LineageClassifier,
    SignatureClusterer,
    SpearmanModuleKernel,
)
from sklearn_specsig.checkpoints import open_checkpoint
from sklearn_specsig.errors import SpecsigError
from sklearn_specsig.kernels import spearman_similarity

# Arrays with no comparable module row rightly warn (and predict NaN or the
# default label); thousands of such warnings would only hide real ones.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*share no comparable module row:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*have no comparable module row:UserWarning"),
]

FUZZ = settings(
    max_examples=150,
    deadline=None,
    # The same examples on every run and machine (conftest's profile does
    # the same for any other hypothesis test).
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def read_everything(source):
    """Names, shapes and every tensor; SpecsigError is the only way out."""
    try:
        ckpt = open_checkpoint(source)
        shapes = {name: ckpt.tensor_shape(name) for name in ckpt.tensor_names()}
        tensors = dict(ckpt.iter_tensors())
    except SpecsigError:
        return None
    assert tensors.keys() == shapes.keys()
    for name, tensor in tensors.items():
        assert tuple(tensor.shape) == shapes[name]
    return tensors


# -- safetensors ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

entry = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I8", "U8", "F64", "BOOL", "F8_E4M3", "Q99"])
        | st.text(max_size=4),
        "shape": st.lists(st.integers(-2, 40), max_size=3) | json_values,
        "data_offsets": st.lists(st.integers(-8, 400), min_size=2, max_size=2) | json_values,
    }
)


def framed(header, data_size):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(range(256))[:data_size] * 2


@FUZZ
@given(raw=st.binary(max_size=300))
def test_safetensors_arbitrary_bytes(scratch, raw):
    file = scratch / "raw.safetensors"
    file.write_bytes(raw)
    assert read_everything(file) is None or len(raw) >= 8


@FUZZ
@given(
    header=st.dictionaries(st.text(min_size=1, max_size=6), entry, max_size=4)
    | st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    data_size=st.integers(0, 256),
)
def test_safetensors_arbitrary_headers(scratch, header, data_size):
    file = scratch / "header.safetensors"
    file.write_bytes(framed(header, data_size))
    tensors = read_everything(file)
    if tensors is not None:
        # Every tensor that came back lies within the file's data section.
        for tensor in tensors.values():
            assert tensor.numel() * tensor.element_size() <= 2 * data_size


dtypes = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8])


@FUZZ
@given(
    specs=st.dictionaries(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=10),
        st.tuples(st.lists(st.integers(0, 5), max_size=3), dtypes),
        min_size=1,
        max_size=4,
    ),
    seed=st.integers(0, 2**16),
)
def test_safetensors_valid_files_round_trip(scratch, specs, seed):
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        name: (torch.randn(shape, generator=gen) * 50).to(dtype) for name, (shape, dtype) in specs.items()
    }
    file = scratch / "valid.safetensors"
    save_file(tensors, file)
    got = read_everything(file)
    assert got is not None and got.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert got[name].dtype == tensor.dtype
        assert torch.equal(got[name], tensor)


# -- shard indexes -------------------------------------------------------------

shard_names = st.sampled_from(
    ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "link.safetensors",
     "../outside.safetensors", "/etc/passwd", "sub/../model-00001-of-00002.safetensors", "..\\x", "", "."]
) | st.text(st.sampled_from("./\\abm-0"), max_size=12)


@pytest.fixture(scope="module")
def model_with_shards(scratch):
    model = scratch / "index-model"
    model.mkdir()
    save_file({"a": torch.ones(2, 2)}, model / "model-00001-of-00002.safetensors")
    save_file({"b": torch.ones(3, 2)}, model / "model-00002-of-00002.safetensors")
    save_file({"a": torch.zeros(2, 2)}, scratch / "outside.safetensors")
    (model / "link.safetensors").symlink_to(scratch / "outside.safetensors")
    return model


@FUZZ
@given(
    index=st.fixed_dictionaries(
        {"weight_map": st.dictionaries(st.sampled_from(["a", "b", "c"]), shard_names | json_values, max_size=3)}
    )
    | json_values
)
def test_index_never_reads_outside_the_model(model_with_shards, index):
    (model_with_shards / "model.safetensors.index.json").write_text(json.dumps(index))
    tensors = read_everything(model_with_shards)
    if tensors is not None:
        # Only the model's own shards can have been read: the symlinked
        # file outside holds zeros, the real shard holds ones.
        assert all(bool((t == 1).all()) for t in tensors.values())
        assert set(tensors) <= {"a", "b"}


# -- GGUF ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_bytes(scratch):
    file = scratch / "seed.gguf"
    writer = gguf.GGUFWriter(file, "llama")
    writer.add_block_count(1)
    rng = np.random.default_rng(0)
    q = gguf.GGMLQuantizationType
    for name, qtype in [("blk.0.attn_q.weight", q.Q8_0), ("blk.0.attn_k.weight", q.F16),
                        ("blk.0.attn_v.weight", q.Q4_1)]:
        data = rng.standard_normal((2, 64)).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return file.read_bytes()


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.none() | st.integers(0, 10**6),
)
def test_gguf_mutated_files(scratch, gguf_bytes, edits, cut):
    raw = bytearray(gguf_bytes)
    for position, value in edits:
        raw[position % len(raw)] = value
    if cut is not None:
        del raw[cut % len(raw) :]
    file = scratch / "mutant.gguf"
    file.write_bytes(bytes(raw))
    read_everything(file)


# -- kernels and estimators ---------------------------------------------------------

signature_arrays = st.integers(1, 4).flatmap(
    lambda depth: arrays(
        np.float64,
        st.tuples(st.integers(0, 6), st.sampled_from([7 * depth, 7 * depth - 1, 0])),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64)
        | st.sampled_from([0.0, 1.0, 2.5]),
    )
)


def _clear_value_error(fn):
    """Run ``fn``; a ValueError is fine if it says what is wrong."""
    try:
        return fn()
    except ValueError as exc:
        # Parameter errors would mean the test itself is wrong.
        assert not isinstance(exc, InvalidParameterError), exc
        assert len(str(exc)) > 20
        return None


@FUZZ
@given(X=signature_arrays)
def test_spearman_kernel_on_arbitrary_arrays(X):
    K = _clear_value_error(lambda: SpearmanModuleKernel(n_modules=7)(X))
    if K is not None:
        assert np.isfinite(X).all() or not np.isinf(X).any()
        assert K.shape == (X.shape[0], X.shape[0])
        finite = K[np.isfinite(K)]
        assert np.all(np.abs(finite) <= 1 + 1e-12)
        np.testing.assert_allclose(K, K.T, equal_nan=True)


@FUZZ
@given(X=signature_arrays, y=st.lists(st.sampled_from("ab"), min_size=6, max_size=6))
def test_estimators_on_arbitrary_arrays(X, y):
    y = np.asarray(y)[: X.shape[0]]
    scores = np.linspace(0, 1, X.shape[0])
    for fit in (
        lambda: LineageClassifier().fit(X, y).predict(X),
        lambda: KNNPerformanceRegressor(n_neighbors=1).fit(X, scores).predict(X),
        lambda: SignatureClusterer(method="spectral").fit(X).labels_,
    ):
        out = _clear_value_error(fit)
        if out is not None:
            assert len(out) == X.shape[0]
            assert not np.isinf(X).any()


def test_spearman_similarity_of_identical_rows_is_one():
    # A sanity anchor for the property tests above: they must be able to see
    # a real value, not only errors.
    X = np.arange(14.0).reshape(1, 14)
    np.testing.assert_allclose(spearman_similarity(np.vstack([X, 2 * X]), n_modules=7), 1.0)
