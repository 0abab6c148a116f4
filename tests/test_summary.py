"""The summary command: per-stage table and JSON counts taken from the model."""
import json

import pytest

from effnet_jax import summary


def test_json_has_counts_from_the_model(capsys):
    assert summary.main(["--model", "efficientnet-b0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["params"], result["batch_stats"], result["resolution"]) == (5_288_548, 42_016, 224)
    assert result["macs"] == pytest.approx(0.386e9, rel=0.02)
    stages = result["stages"]
    assert [s["channels"] for s in stages[1:-1]] == [16, 24, 40, 80, 112, 192, 320]
    assert [s["output_size"] for s in stages] == [112, 112, 56, 28, 14, 14, 7, 7, 7]


def test_resolution_changes_macs_not_params(capsys):
    summary.main(["--model", "efficientnet-b0", "--resolution", "448", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == 5_288_548 and result["resolution"] == 448
    assert result["macs"] == pytest.approx(4 * 0.386e9, rel=0.03)


def test_table_shows_published_and_formula_side_by_side(capsys):
    summary.main(["--model", "efficientnet-b3"])
    text = capsys.readouterr().out
    assert "12,233,232" in text and "published" in text and "formula" in text
    assert "alpha*beta^2*gamma^2 = 1.9203" in text


def test_phi_model_and_unknown_name(capsys):
    summary.main(["--model", "efficientnet", "--phi", "1", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "efficientnet-phi1" and result["compound_scaling"]["phi"] == 1
    assert 1.5 < result["compound_scaling"]["measured_flops_growth"] < 2.6
    with pytest.raises(SystemExit) as error:
        summary.main(["--model", "resnet-9000"])
    assert error.value.code == 2
    assert "Unknown model 'resnet-9000'" in capsys.readouterr().err
