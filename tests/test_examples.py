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
