"""PEFT LoRA adapters signed as the merged model, against peft's own merge."""

import json
import shutil
import warnings

import numpy as np
import pytest
from _transformers_factories import write_tiny_checkpoint

from sklearn_specsig import SignatureStore, compute_signature
from sklearn_specsig.errors import CheckpointFormatError, CheckpointNotFoundError

peft = pytest.importorskip("peft")
torch = pytest.importorskip("torch")


def _adapter(base_dir, folder, *, seed=1, record_base=True, **lora):
    """Write a LoRA adapter of the tiny llama at ``base_dir`` with non-zero B,
    and the peft-merged model beside it (``folder``-merged)."""
    transformers = pytest.importorskip("transformers")
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **lora}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
        torch.manual_seed(seed)
        peft_model = peft.get_peft_model(
            model, peft.LoraConfig(init_lora_weights=False, **lora))
        peft_model.save_pretrained(folder)
        merged = folder.parent / f"{folder.name}-merged"
        peft_model.merge_and_unload().save_pretrained(merged)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    assert config["base_model_name_or_path"] == str(base_dir)
    if not record_base:
        config["base_model_name_or_path"] = None
        config_file.write_text(json.dumps(config))
    return merged


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora") / "base"
    write_tiny_checkpoint("llama", folder)
    return folder


def _close(a, b):
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5)


@pytest.mark.parametrize("lora", [
    {},
    {"use_rslora": True, "r": 8, "lora_alpha": 4},
    {"rank_pattern": {"layers.1.self_attn.q_proj": 2},
     "alpha_pattern": {"v_proj": 32}, "target_modules": ["q_proj", "v_proj", "down_proj"]},
], ids=["alpha/r", "rslora", "patterns"])
def test_an_adapter_signs_as_peft_merged_model(base, tmp_path, lora):
    merged = _adapter(base, tmp_path / "adapter", **lora)
    sig = compute_signature(tmp_path / "adapter", cache=None, progress=False)
    reference = compute_signature(merged, cache=None, progress=False)
    base_sig = compute_signature(base, cache=None, progress=False)
    _close(sig, reference)
    assert np.isfinite(sig.values).all()
    # The delta matters: q and v move, k does not.
    changed = ~np.isclose(sig.values, base_sig.values, rtol=1e-6)
    assert changed[0].all() and changed[2].all() and not changed[1].any()


def test_merged_tensors_equal_merge_and_unload(base, tmp_path):
    from safetensors.torch import load_file

    from sklearn_specsig.checkpoints import open_checkpoint

    merged = _adapter(base, tmp_path / "adapter", use_rslora=True)
    ckpt = open_checkpoint(tmp_path / "adapter")
    assert ckpt.tensor_names() == open_checkpoint(base).tensor_names()
    reference = load_file(merged / "model.safetensors")
    touched = 0
    for name, tensor in ckpt.iter_tensors():
        if name in reference:
            assert tensor.dtype == reference[name].dtype
            torch.testing.assert_close(tensor, reference[name], rtol=1e-6, atol=1e-7)
            touched += name in ckpt.deltas
    assert touched == 6  # q_proj and v_proj of 3 layers


def test_base_keyword_wins_and_a_missing_base_is_named(base, tmp_path):
    merged = _adapter(base, tmp_path / "adapter", record_base=False)
    with pytest.raises(CheckpointNotFoundError, match="base_model_name_or_path.*base="):
        compute_signature(tmp_path / "adapter", cache=None, progress=False)
    sig = compute_signature(tmp_path / "adapter", base=base, cache=None, progress=False)
    _close(sig, compute_signature(merged, cache=None, progress=False))

    config_file = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    config_file.write_text(json.dumps(config))
    with pytest.raises(CheckpointNotFoundError, match="gone.*base_model_name_or_path.*base="):
        compute_signature(tmp_path / "adapter", cache=None, progress=False)
    # base= wins over a wrong base_model_name_or_path.
    again = compute_signature(tmp_path / "adapter", base=str(base), cache=None, progress=False)
    _close(again, sig)
    with pytest.raises(ValueError, match="not a PEFT adapter"):
        compute_signature(base, base=base, cache=None, progress=False)


def test_untouched_matrices_hit_the_base_cache(base, tmp_path, count_solves):
    store = SignatureStore(tmp_path / "cache")
    compute_signature(base, cache=store, progress=False)
    assert count_solves() == 21  # 7 roles x 3 layers
    _adapter(base, tmp_path / "one", seed=1)
    _adapter(base, tmp_path / "two", seed=2)
    compute_signature(tmp_path / "one", cache=store, progress=False)
    assert count_solves() == 27  # q and v of 3 layers
    compute_signature(tmp_path / "two", cache=store, progress=False)
    assert count_solves() == 33
    compute_signature(tmp_path / "two", cache=store, progress=False)
    assert count_solves() == 33  # the memo: nothing read

    # A changed adapter misses the memo and solves its matrices again.
    adapter = tmp_path / "one" / "adapter_model.safetensors"
    shutil.copy(tmp_path / "two" / "adapter_model.safetensors", adapter)
    compute_signature(tmp_path / "one", cache=store, progress=False)
    assert count_solves() == 33  # now adapter two's content: every spectrum cached


def test_refused_adapters_say_why(base, tmp_path):
    _adapter(base, tmp_path / "adapter")
    config_file = tmp_path / "adapter" / "adapter_config.json"
    original = config_file.read_text()
    for change, message in [
        ({"use_dora": True}, "use_dora.*DoRA"),
        ({"peft_type": "IA3"}, "'IA3' adapter; only LoRA"),
        ({"init_lora_weights": "pissa"}, "pissa.*rewrites the base"),
    ]:
        config_file.write_text(json.dumps({**json.loads(original), **change}))
        with pytest.raises(CheckpointFormatError, match=message):
            compute_signature(tmp_path / "adapter", cache=None, progress=False)
    config_file.write_text(original)

    # An adapter of another model: its factors match no tensor of this base.
    other = tmp_path / "other"
    write_tiny_checkpoint("llama", other, hidden_size=32, head_dim=8)
    with pytest.raises(CheckpointFormatError, match="do not fit.*base="):
        compute_signature(tmp_path / "adapter", base=other, cache=None, progress=False)
    gpt2 = tmp_path / "gpt2"
    write_tiny_checkpoint("gpt2", gpt2)
    with pytest.raises(CheckpointFormatError, match="match no tensor.*base="):
        compute_signature(tmp_path / "adapter", base=gpt2, cache=None, progress=False)


def test_gpt2_fan_in_fan_out(tmp_path):
    transformers = pytest.importorskip("transformers")
    write_tiny_checkpoint("gpt2", tmp_path / "base")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base")
        torch.manual_seed(0)
        peft_model = peft.get_peft_model(model, peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True,
            init_lora_weights=False))
        peft_model.save_pretrained(tmp_path / "adapter")
        peft_model.merge_and_unload().save_pretrained(tmp_path / "merged")
    sig = compute_signature(tmp_path / "adapter", cache=None, progress=False)
    _close(sig, compute_signature(tmp_path / "merged", cache=None, progress=False))


COMMIT_BASE = "b" * 40
COMMIT_LORA = "c" * 40


def _cache_repo(cache, repo_id, commit, folder):
    """Put every top-level file of ``folder`` in the hub cache as ``repo_id``."""
    from _checkpoint_factories import write_hub_cache

    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    return write_hub_cache(cache, repo_id, commit, files)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline huggingface_hub cache, the default one for this test: no
    download, every hub id is read from ``tmp_path / "hub"``."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("recorded", ["hub id", "local path"])
def test_an_adapter_hub_id_signs_as_its_local_folder(base, tmp_path, hub, recorded):
    """An adapter repo brings adapter_config.json and its weights; its base,
    named in that config by hub id or local path, resolves as well."""
    transformers = pytest.importorskip("transformers")
    from sklearn_specsig.checkpoints import locate_checkpoint

    base_snapshot = _cache_repo(hub, "org/tiny-llama", COMMIT_BASE, base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Loaded from the cache by its hub id, peft records that id (or the
        # local folder) as base_model_name_or_path.
        model = transformers.AutoModelForCausalLM.from_pretrained(
            "org/tiny-llama" if recorded == "hub id" else base, local_files_only=True)
        torch.manual_seed(3)
        peft.get_peft_model(model, peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
            init_lora_weights=False)).save_pretrained(tmp_path / "adapter")
    named = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert named["base_model_name_or_path"] == (
        "org/tiny-llama" if recorded == "hub id" else str(base))
    _cache_repo(hub, "org/my-lora", COMMIT_LORA, tmp_path / "adapter")

    location = locate_checkpoint("org/my-lora")
    assert location.format == "lora"
    assert location.path == hub / "models--org--my-lora" / "snapshots" / COMMIT_LORA
    assert location.file.name == "adapter_model.safetensors"
    expected_base = base_snapshot if recorded == "hub id" else base
    assert location.base_location().path == expected_base

    sig = compute_signature("org/my-lora", cache=None, progress=False)
    local = compute_signature(tmp_path / "adapter", base=base, cache=None, progress=False)
    np.testing.assert_array_equal(sig.values, local.values)
    assert sig.source == "org/my-lora"
    # base= as a hub id, winning over the recorded base.
    again = compute_signature("org/my-lora", base="org/tiny-llama", cache=None,
                              progress=False)
    np.testing.assert_array_equal(again.values, local.values)


def test_an_adapter_hub_id_with_bin_weights_resolves(base, tmp_path, hub):
    """The .bin tier fetches adapter_model.bin beside adapter_config.json."""
    from sklearn_specsig.checkpoints._hub import resolve_repo_id

    _adapter(base, tmp_path / "adapter")
    folder = tmp_path / "bin-adapter"
    folder.mkdir()
    shutil.copy(tmp_path / "adapter" / "adapter_config.json", folder)
    from safetensors.torch import load_file

    torch.save(load_file(tmp_path / "adapter" / "adapter_model.safetensors"),
               folder / "adapter_model.bin")
    snapshot = _cache_repo(hub, "org/bin-lora", COMMIT_LORA, folder)
    assert resolve_repo_id("org/bin-lora") == snapshot
    # An adapter config alone (no weights) is no checkpoint.
    (folder / "adapter_model.bin").unlink()
    _cache_repo(hub, "org/no-weights", COMMIT_LORA, folder)
    with pytest.raises(CheckpointNotFoundError, match="no top-level"):
        resolve_repo_id("org/no-weights")


@pytest.fixture
def mock_hub(tmp_path, monkeypatch):
    """Online hub resolution against a mocked transport: huggingface_hub's
    own HTTP client (httpx2) answers from local folders, ``repos[repo_id]``;
    ``requests`` records the (method, path) of every call."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    httpx2 = pytest.importorskip("httpx2")
    import hashlib
    import re

    from huggingface_hub.utils._http import default_client_factory

    repos, requests = {}, []
    commit = "e" * 40

    def files(repo_id):
        return {p.name: p.read_bytes() for p in repos[repo_id].iterdir() if p.is_file()}

    def handler(request):
        path = request.url.path
        requests.append((request.method, path))
        info = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/[^/]+", path)
        if info and info[1] in repos:
            content = files(info[1])
            if info[2] == "revision":
                return httpx2.Response(200, json={
                    "id": info[1], "sha": commit,
                    "siblings": [{"rfilename": name} for name in content]})
            return httpx2.Response(200, json=[
                {"type": "file", "path": name, "size": len(data),
                 "oid": hashlib.sha1(data).hexdigest()} for name, data in content.items()])
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", path)
        if resolve and resolve[1] in repos and resolve[2] in files(resolve[1]):
            data = files(resolve[1])[resolve[2]]
            headers = {"X-Repo-Commit": commit, "Content-Length": str(len(data)),
                       "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
            return httpx2.Response(200, headers=headers,
                                   content=b"" if request.method == "HEAD" else data)
        return httpx2.Response(404, headers={"X-Error-Code": "RepoNotFound"})

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    huggingface_hub.set_client_factory(lambda: httpx2.Client(
        transport=httpx2.MockTransport(handler), follow_redirects=True))
    try:
        yield repos, requests
    finally:
        huggingface_hub.set_client_factory(default_client_factory)


def test_an_adapter_hub_id_downloads_its_config_and_its_base(base, tmp_path, mock_hub):
    """Online: the adapter repo's adapter_config.json and safetensors weights
    are downloaded (nothing else), then the base repo it names."""
    repos, requests = mock_hub
    _adapter(base, tmp_path / "adapter")
    config_file = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "base_model_name_or_path": "org/tiny-llama"}))
    torch.save({}, tmp_path / "adapter" / "training_args.bin")  # never fetched
    repos.update({"org/my-lora": tmp_path / "adapter", "org/tiny-llama": base})

    sig = compute_signature("org/my-lora", cache=None, progress=False)
    local = compute_signature(tmp_path / "adapter", base=base, cache=None, progress=False)
    np.testing.assert_array_equal(sig.values, local.values)
    fetched = {path.rsplit("/", 1)[1] for method, path in requests
               if method == "GET" and "/resolve/" in path}
    assert fetched == {"adapter_config.json", "adapter_model.safetensors",
                       "config.json", "model.safetensors"}
    assert any(path.startswith("/org/tiny-llama/resolve/") for _, path in requests)


def test_an_adapter_saved_without_safetensors_signs_the_same(base, tmp_path):
    # peft's save_pretrained(safe_serialization=False) writes adapter_model.bin.
    from safetensors.torch import load_file

    merged = _adapter(base, tmp_path / "adapter")
    folder = tmp_path / "bin-adapter"
    folder.mkdir()
    shutil.copy(tmp_path / "adapter" / "adapter_config.json", folder)
    torch.save(load_file(tmp_path / "adapter" / "adapter_model.safetensors"),
               folder / "adapter_model.bin")
    sig = compute_signature(folder, cache=None, progress=False)
    _close(sig, compute_signature(merged, cache=None, progress=False))
    _close(sig, compute_signature(tmp_path / "adapter", cache=None, progress=False))


def test_a_lora_on_the_embedding_is_merged_over_its_saved_base_layer(base, tmp_path):
    # peft saves embed_tokens.base_layer beside the embedding's LoRA factors:
    # the delta goes on top of it (the merged tensor, not the bare copy).
    from safetensors.torch import load_file

    from sklearn_specsig.checkpoints import open_checkpoint

    merged = _adapter(base, tmp_path / "adapter", target_modules=["q_proj", "embed_tokens"])
    name = "model.embed_tokens.weight"
    (_, ours), = open_checkpoint(tmp_path / "adapter").iter_tensors([name])
    np.testing.assert_allclose(ours.numpy(), load_file(merged / "model.safetensors")[name].numpy(),
                               rtol=1e-6, atol=1e-7)


def test_a_folder_with_a_full_model_and_an_adapter_reads_the_adapter(base, tmp_path):
    merged = _adapter(base, tmp_path / "adapter")
    shutil.copy(base / "model.safetensors", tmp_path / "adapter")
    shutil.copy(base / "config.json", tmp_path / "adapter")
    sig = compute_signature(tmp_path / "adapter", cache=None, progress=False)
    _close(sig, compute_signature(merged, cache=None, progress=False))
