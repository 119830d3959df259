"""Tests of sklearn_specsig.checkpoints on small checkpoints written here.

Broken and hostile files are in test_bad_files.py.
"""


import gguf
import numpy as np
import pytest
import torch
from _checkpoint_factories import (
    QK_K,
    assert_same_gguf_reader,
    make_tensors,
    q4_k_block,
    q6_k_block,
    write_config,
    write_gguf,
    write_hub_cache,
    write_sharded,
)
from safetensors.torch import save_file

from sklearn_specsig.checkpoints import Checkpoint, open_checkpoint
from sklearn_specsig.checkpoints._gguf import _ArrayReader
from sklearn_specsig.errors import (
    CheckpointNotFoundError,
)

QT = gguf.GGMLQuantizationType
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def assert_same_tensors(ckpt, expected):
    """The checkpoint yields exactly ``expected``, bit for bit, stored dtype kept."""
    got = dict(ckpt.iter_tensors())
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype
        assert torch.equal(got[name], tensor), name
        assert ckpt.tensor_shape(name) == tuple(tensor.shape)
    assert sorted(ckpt.tensor_names()) == sorted(expected)


# -- safetensors --------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("as_directory", [True, False])
def test_single_safetensors_round_trip(tmp_path, dtype, as_directory):
    tensors = make_tensors(dtype)
    save_file(tensors, tmp_path / "model.safetensors")
    config = write_config(tmp_path, hidden_size=8)
    source = str(tmp_path if as_directory else tmp_path / "model.safetensors")

    ckpt = open_checkpoint(source)

    assert isinstance(ckpt, Checkpoint)
    assert ckpt.format == "safetensors"
    assert ckpt.source == source
    assert ckpt.path == (tmp_path if as_directory else tmp_path / "model.safetensors")
    assert ckpt.config == config
    assert_same_tensors(ckpt, tensors)
    stats = ckpt.file_stats()
    assert [s[0] for s in stats] == [
        str(tmp_path / "model.safetensors"),
        str(tmp_path / "config.json"),
    ]
    assert stats[0][1] == (tmp_path / "model.safetensors").stat().st_size
    assert stats[0][2] == (tmp_path / "model.safetensors").stat().st_mtime_ns


def test_safetensors_path_object_and_no_config(tmp_path):
    save_file(make_tensors(), tmp_path / "weights.safetensors")
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.source == str(tmp_path)
    assert ckpt.config == {}
    assert len(ckpt.file_stats()) == 1


@pytest.mark.parametrize("n_shards", [2, 3])
def test_sharded_safetensors(tmp_path, n_shards):
    tensors = make_tensors(torch.bfloat16)
    write_sharded(tmp_path, tensors, n_shards)

    ckpt = open_checkpoint(tmp_path)

    assert_same_tensors(ckpt, tensors)
    assert len(ckpt.file_stats()) == n_shards
    # Names come shard by shard, in the -0000k-of- order they were written.
    first_shard = list(tensors)[::n_shards]
    assert ckpt.tensor_names()[: len(first_shard)] == sorted(first_shard)


def test_iter_tensors_restricted_and_lazy(tmp_path):
    tensors = make_tensors()
    write_sharded(tmp_path, tensors, 2)
    ckpt = open_checkpoint(tmp_path)
    wanted = ["model.norm.weight", "model.layers.0.mlp.up_proj.weight"]

    iterator = ckpt.iter_tensors(wanted)

    assert not isinstance(iterator, (list, tuple, dict))
    got = dict(iterator)
    assert set(got) == set(wanted)
    assert torch.equal(got["model.norm.weight"], tensors["model.norm.weight"])


def test_unknown_tensor_names(tmp_path):
    save_file(make_tensors(), tmp_path / "model.safetensors")
    ckpt = open_checkpoint(tmp_path)
    with pytest.raises(KeyError, match="nope"):
        ckpt.tensor_shape("nope")
    with pytest.raises(KeyError, match="nope"):
        list(ckpt.iter_tensors(["nope"]))


def test_safetensors_preferred_over_bin(tmp_path):
    tensors = make_tensors()
    save_file(tensors, tmp_path / "model.safetensors")
    torch.save({"other": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "safetensors"
    assert set(ckpt.tensor_names()) == set(tensors)


# -- PyTorch .bin --------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("zip_format", [True, False])
def test_bin_round_trip(tmp_path, dtype, zip_format):
    tensors = make_tensors(dtype)
    torch.save(
        tensors,
        tmp_path / "pytorch_model.bin",
        _use_new_zipfile_serialization=zip_format,
    )
    write_config(tmp_path)
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "pytorch"
    assert ckpt.config["model_type"] == "llama"
    assert_same_tensors(ckpt, tensors)
    assert len(ckpt.file_stats()) == 2


def test_sharded_bin(tmp_path):
    tensors = make_tensors(torch.float16)
    write_sharded(tmp_path, tensors, 2, fmt="bin")
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "pytorch"
    assert_same_tensors(ckpt, tensors)
    assert len(ckpt.file_stats()) == 2


def test_single_bin_file_skips_non_tensors(tmp_path):
    tensors = make_tensors()
    torch.save({**tensors, "step": 3}, tmp_path / "weights.pt")
    ckpt = open_checkpoint(tmp_path / "weights.pt")
    assert_same_tensors(ckpt, tensors)


# -- GGUF ----------------------------------------------------------------------


def _matrix(out_features, in_features, seed=0):
    return (
        np.random.default_rng(seed)
        .standard_normal((out_features, in_features))
        .astype(np.float32)
    )


def _read_one(path, name="w"):
    ckpt = open_checkpoint(path)
    assert ckpt.format == "gguf"
    ((got_name, tensor),) = ckpt.iter_tensors([name])
    assert got_name == name
    assert tensor.dtype == torch.float32
    return ckpt, tensor.numpy()


@pytest.mark.parametrize(
    "qtype, expected",
    [
        (QT.F32, lambda x: x),
        (QT.F16, lambda x: x.astype(np.float16).astype(np.float32)),
        (QT.BF16, lambda x: torch.from_numpy(x).bfloat16().float().numpy()),
    ],
    ids=["F32", "F16", "BF16"],
)
def test_gguf_float_types_exact(tmp_path, qtype, expected):
    x = _matrix(6, 40)
    data = gguf.quants.quantize(x, qtype)
    write_gguf(
        tmp_path / "m.gguf", {"w": (data, qtype if data.dtype == np.uint8 else None)}
    )
    ckpt, got = _read_one(tmp_path / "m.gguf")
    assert ckpt.tensor_shape("w") == (6, 40)
    np.testing.assert_array_equal(got, expected(x))


def _step_q8_0(block):
    return np.abs(block).max() / 127


def _step_q4_0(block):
    return np.abs(block).max() / 8


def _step_q5_0(block):
    return np.abs(block).max() / 16


def _step_q4_1(block):
    return (block.max() - block.min()) / 15


@pytest.mark.parametrize(
    "qtype, step",
    [
        (QT.Q8_0, _step_q8_0),
        (QT.Q4_0, _step_q4_0),
        (QT.Q5_0, _step_q5_0),
        (QT.Q4_1, _step_q4_1),
    ],
    ids=["Q8_0", "Q4_0", "Q5_0", "Q4_1"],
)
def test_gguf_block_quants_close(tmp_path, qtype, step):
    # 3 x 96: non-square, and 3 blocks of 32 per row, so a transposed read
    # would give the wrong shape and values.
    x = _matrix(3, 96, seed=1)
    write_gguf(tmp_path / "m.gguf", {"w": (gguf.quants.quantize(x, qtype), qtype)})

    ckpt, got = _read_one(tmp_path / "m.gguf")

    assert ckpt.tensor_shape("w") == (3, 96)
    assert got.shape == (3, 96)
    blocks, got_blocks = x.reshape(-1, 32), got.reshape(-1, 32)
    for block, got_block in zip(blocks, got_blocks, strict=True):
        # Within one quantisation step of the block; the half-step rounding
        # is exceeded only at the clipped extreme of asymmetric ranges.
        err = np.abs(got_block - block)
        assert err.max() <= step(block) * 1.01
        assert err.mean() <= step(block) / 2


@pytest.mark.parametrize("qtype", [QT.Q4_K, QT.Q6_K])
def test_k_quants_not_quantizable_by_gguf(qtype):
    # Why the next test packs these blocks by hand.
    with pytest.raises(NotImplementedError):
        gguf.quants.quantize(_matrix(1, QK_K), qtype)


def _q4_k_matrix(rng, out_features, n_blocks):
    rows, expected = [], []
    for _ in range(out_features * n_blocks):
        q = rng.integers(0, 16, QK_K)
        sc = rng.integers(0, 64, 8)
        m = rng.integers(0, 64, 8)
        d, dmin = 0.5, 0.25  # exact in float16
        rows.append(q4_k_block(q, sc, m, d, dmin))
        expected.append(d * np.repeat(sc, 32) * q - dmin * np.repeat(m, 32))
    return rows, expected


def _q6_k_matrix(rng, out_features, n_blocks):
    rows, expected = [], []
    for _ in range(out_features * n_blocks):
        q = rng.integers(0, 64, QK_K)
        sc = rng.integers(-128, 128, 16)
        d = 0.125
        rows.append(q6_k_block(q, sc, d))
        expected.append(d * np.repeat(sc, 16) * (q - 32))
    return rows, expected


@pytest.mark.parametrize(
    "qtype, pack",
    [(QT.Q4_K, _q4_k_matrix), (QT.Q6_K, _q6_k_matrix)],
    ids=["Q4_K", "Q6_K"],
)
def test_gguf_k_quants_hand_packed(tmp_path, qtype, pack):
    out_features, n_blocks = 3, 2  # a 3 x 512 matrix
    blocks, expected = pack(np.random.default_rng(0), out_features, n_blocks)
    data = np.stack(blocks).reshape(out_features, -1)
    expected = np.stack(expected).reshape(out_features, n_blocks * QK_K)
    write_gguf(tmp_path / "m.gguf", {"w": (data, qtype)})

    ckpt, got = _read_one(tmp_path / "m.gguf")

    assert ckpt.tensor_shape("w") == (3, 512)
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_gguf_metadata_order_and_directory(tmp_path):
    tensors = {
        "token_embd.weight": (_matrix(11, 8), None),
        "blk.0.attn_q.weight": (_matrix(8, 8, 1).astype(np.float16), None),
        "output_norm.weight": (np.ones(8, dtype=np.float32), None),
    }
    metadata = {
        "block_count": 1,
        "attention.head_count": 4,
        "attention.head_count_kv": [2],
        "embedding_length": 8,
        "feed_forward_length": 16,
    }
    write_gguf(tmp_path / "model-Q8_0.gguf", tensors, arch="gptneox", metadata=metadata)

    ckpt = open_checkpoint(tmp_path)

    assert ckpt.path == tmp_path
    assert ckpt.config == {
        "model_type": "gpt_neox",
        "gguf_architecture": "gptneox",
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_size": 8,
        "intermediate_size": 16,
    }
    assert ckpt.tensor_names() == list(tensors)
    assert ckpt.tensor_shape("output_norm.weight") == (8,)
    got = dict(ckpt.iter_tensors())
    np.testing.assert_array_equal(
        got["token_embd.weight"].numpy(), tensors["token_embd.weight"][0]
    )
    assert [s[0] for s in ckpt.file_stats()] == [str(tmp_path / "model-Q8_0.gguf")]


def test_gguf_plain_array_reader_reads_what_gguf_reads(tmp_path):
    # A vocabulary (string and float arrays) is what makes gguf's parse slow
    # and what _ArrayReader speeds up: its fields must be gguf's, part for part.
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint32("llama.block_count", 1)
    writer.add_token_list([f"tok{i}é" for i in range(300)])
    writer.add_token_scores([float(-i) for i in range(300)])
    writer.add_token_merges([f"t {i}" for i in range(200)])
    writer.add_array("llama.nested", [[1, 2], [3]])
    writer.add_string("general.name", "tiny")
    writer.add_tensor("blk.0.attn_q.weight", _matrix(8, 32))
    writer.add_tensor("blk.0.ffn_up.weight", gguf.quants.quantize(_matrix(4, 64), QT.Q8_0),
                      raw_dtype=QT.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    fast = _ArrayReader(path)

    assert_same_gguf_reader(fast, gguf.GGUFReader(path))
    assert fast.fields["tokenizer.ggml.tokens"].contents()[299] == "tok299é"
    assert fast.fields["tokenizer.ggml.scores"].contents()[7] == -7.0


# -- hub ids, offline against a prepared cache --------------------------------

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A huggingface_hub cache holding two revisions of org/tiny-model."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    for commit, seed, refs in [(COMMIT_A, 0, ("main",)), (COMMIT_B, 1, ("v1",))]:
        src = tmp_path / f"src-{seed}"
        src.mkdir()
        save_file(make_tensors(seed=seed), src / "model.safetensors")
        write_config(src, hidden_size=8)
        write_hub_cache(
            cache,
            "org/tiny-model",
            commit,
            {
                "model.safetensors": src / "model.safetensors",
                "config.json": src / "config.json",
            },
            refs=refs,
        )
    return cache


@pytest.mark.parametrize(
    "revision, seed", [(None, 0), ("main", 0), ("v1", 1), (COMMIT_A, 0), (COMMIT_B, 1)]
)
def test_hub_id_offline(hub_cache, revision, seed):
    ckpt = open_checkpoint("org/tiny-model", revision=revision, cache_dir=hub_cache)
    commit = {0: COMMIT_A, 1: COMMIT_B}[seed]
    assert ckpt.source == "org/tiny-model"
    assert ckpt.path == hub_cache / "models--org--tiny-model" / "snapshots" / commit
    assert ckpt.config["hidden_size"] == 8
    assert_same_tensors(ckpt, make_tensors(seed=seed))


def test_hub_id_sharded_in_cache(tmp_path, monkeypatch):
    # Shards are symlinks into blobs/, outside the snapshot but inside the
    # hub's own repo folder: allowed.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tensors = make_tensors()
    index = write_sharded(tmp_path / "src", tensors, 2)
    files = {p.name: p for p in (tmp_path / "src").iterdir()}
    write_hub_cache(tmp_path / "hub", "org/sharded", COMMIT_A, files)
    ckpt = open_checkpoint("org/sharded", cache_dir=tmp_path / "hub")
    assert index.name in {p.name for p in ckpt.path.iterdir()}
    assert_same_tensors(ckpt, tensors)


def test_hub_id_bin_only_falls_back(tmp_path):
    tensors = make_tensors()
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    write_hub_cache(
        tmp_path / "hub",
        "org/old",
        COMMIT_A,
        {"pytorch_model.bin": tmp_path / "pytorch_model.bin"},
    )
    ckpt = open_checkpoint("org/old", cache_dir=tmp_path / "hub", local_files_only=True)
    assert ckpt.format == "pytorch"
    assert_same_tensors(ckpt, tensors)


@pytest.mark.parametrize(
    "repo_id, revision", [("org/absent", None), ("org/tiny-model", "no-such-branch")]
)
def test_hub_id_missing_offline(hub_cache, repo_id, revision):
    with pytest.raises(CheckpointNotFoundError, match="HF_HUB_OFFLINE") as info:
        open_checkpoint(repo_id, revision=revision, cache_dir=hub_cache)
    assert repo_id in str(info.value)
    assert "download it first" in str(info.value)
