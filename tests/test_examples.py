"""The example scripts run, in a fast configuration, and say what they claim."""

import importlib.util
from pathlib import Path

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
