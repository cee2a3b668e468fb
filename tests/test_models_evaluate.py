"""Evaluation on the fixed test set, and the shipped model zoo."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

import flimcc
from flimcc.models import zoo
from flimcc.models.evaluate import TEST_SEED, evaluate_model, main, make_test_set
from flimcc.models.export import export
from flimcc.models.seq2seq import Seq2SeqLite


@pytest.fixture(scope="module")
def student_onnx(tmp_path_factory):
    torch.manual_seed(0)
    return export(Seq2SeqLite(), tmp_path_factory.mktemp("eval") / "student.onnx")


def test_test_set_is_fixed():
    a, b = make_test_set(16), make_test_set(16)
    assert np.array_equal(a.x, b.x) and a.x.shape == (16, 135, 1)
    assert TEST_SEED not in (1, 2)  # the training and validation seeds


def test_evaluate_prints_a_table(student_onnx, tmp_path, capsys):
    assert main([str(student_onnx), "--samples", "32", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("model"))
    for column in ("RMSE", "R^2", "L2", "tau1 MAE", "tau2 MAE", "f MAE"):
        assert column in header
    assert any(line.startswith("student ") for line in out.splitlines())
    metrics = json.loads((tmp_path / "m.json").read_text())["student"]
    assert set(metrics) == {"full", "short", "long", "lifetimes"}


def test_evaluate_model_uses_the_models_own_steps(tmp_path):
    path = export(Seq2SeqLite(), tmp_path / "short.onnx", steps=40)
    ev = evaluate_model(path, samples=16)
    assert np.isfinite(ev.full.rmse)


def test_no_models_is_an_error(capsys):
    with pytest.raises(SystemExit):
        main([])
    assert "give model files or --zoo" in capsys.readouterr().err


def test_zoo_unknown_name_lists_the_available_ones():
    with pytest.raises(KeyError, match="available"):
        zoo.path("no-such-model")


CARD_KEYS = {"name", "architecture", "parameters", "bits", "training_data", "training", "accuracy", "export"}


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_models_have_cards_and_load(name):
    card = zoo.card(name)
    assert CARD_KEYS <= set(card) and card["name"] == name
    path = zoo.path(name)
    assert path.stat().st_size < 2_000_000
    proto = onnx.load(path)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["flimcc.bits"] == str(card["bits"])
    if card["bits"] == "float":  # QONNX at T = 135 takes minutes to load (qonnx shape checks)
        flimcc.load(path)


def test_ship_writes_model_card_and_readme(tmp_path):
    from flimcc.models.train import CHECKPOINT, TrainConfig, train

    config = TrainConfig.for_model("student", bits=None, epochs=1, samples=64, val_samples=32, batch_size=32)
    train(config, tmp_path / "run", quiet=True, threads=1)
    card = zoo.ship(tmp_path / "run" / CHECKPOINT, "tiny", check_samples=4, accuracy_samples=32,
                    zoo_dir=tmp_path / "zoo")
    assert CARD_KEYS <= set(card) and card["parameters"] == 6_819 and card["bits"] == "float"
    assert card["export"]["max_abs_err"] < 1e-5
    assert (tmp_path / "zoo" / "tiny.json").is_file()
    assert "| tiny |" in (tmp_path / "zoo" / "README.md").read_text()
    hw = card["hardware"]  # compiled for the smallest board (8-bit PTQ of the float model)
    assert hw["board"] == "pynq-z2" and hw["bit_exact"] and hw["did_not_fit"] == {}
    assert hw["seconds_per_10k"] == pytest.approx(1e4 / hw["pixels_per_second"], rel=1e-3)
    assert hw["pixels_per_second"] == pytest.approx(hw["clock_mhz"] * 1e6 / hw["cycles_per_pixel"], rel=1e-3)


def test_hardware_table_on_a_hand_worked_card():
    card = {"name": "m", "hardware": {"board": "pynq-z2", "pixel_parallelism": 112, "cycles_per_pixel": 2000.0,
                                      "pixels_per_second": 50_000, "seconds_per_10k": 0.2,
                                      "resources": {"LUT": 1000.0, "BRAM_18K": 10.0, "DSP": 5.0}},
            "comparison": {"test_set": {"rows": {"least-squares": {"seconds_per_10k": 90.0}}}}}
    lines = zoo._hardware_lines([card, {"name": "big", "hardware": {"board": None, "did_not_fit": {}}}])
    assert "| m | pynq-z2 | 112 | 2,000 | 50,000 | 0.200 | 450x | 1,000 / 10 / 5 |" in lines  # 90 / 0.2
    assert "| big | fits none | | | | | | |" in lines


def test_bits_column_names_what_differs_from_the_weights():
    assert zoo._bits({"bits": 8}) == "8" and zoo._bits({"bits": "float"}) == "float"
    assert zoo._bits({"bits": 4, "state_bits": 8}) == "4 (state 8)"
    assert zoo._bits({"bits": 4, "act_bits": 8, "state_bits": 8}) == "4 (act 8, state 8)"


def test_ship_refuses_a_float_shadow_and_counts_the_runs_a_model_started_from(tmp_path, capsys):
    from flimcc.models.train import CHECKPOINT, TrainConfig, train

    tiny = {"epochs": 1, "samples": 64, "val_samples": 32, "batch_size": 32}
    shadow = TrainConfig.for_model("student", bits=None, sigmoid="hard", tanh="hard", **tiny)
    train(shadow, tmp_path / "shadow", quiet=True, threads=1)
    assert zoo.main(["ship", str(tmp_path / "shadow" / CHECKPOINT), "shadow"]) == 2
    assert "float shadow" in capsys.readouterr().err
    assert not (zoo.ZOO_DIR / "shadow.onnx").exists()
    qat = TrainConfig.for_model("student", bits=8, sigmoid="hard", tanh="hard",
                                init=str(tmp_path / "shadow" / CHECKPOINT), **tiny)
    chain = zoo._init_runs(qat)
    shadow_seconds = sum(h["seconds"] for h in json.loads((tmp_path / "shadow" / "train.json").read_text())["history"])
    assert chain == [{"run": "shadow", "epochs": 1, "seconds": round(shadow_seconds, 1)}]
    with pytest.raises(ValueError, match="no train.json"):
        zoo._init_runs(TrainConfig(init=str(tmp_path / "elsewhere" / CHECKPOINT)))
