"""Training: quick runs, loss going down, distillation, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from flimcc.models.train import (
    BEST,
    CHECKPOINT,
    SUMMARY,
    TrainConfig,
    build_model,
    epoch_lr,
    initial_weights,
    load_checkpoint,
    loss_fn,
    main,
    train,
)

TINY = {"samples": 96, "val_samples": 32, "batch_size": 32}


@pytest.fixture(autouse=True)
def one_thread():
    # Training sets one torch thread like the command line; give the suite its setting back.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quick_student_qat_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "student"
    assert main(["student", "--quick", "--out", str(out)]) == 0
    model, config, ckpt = load_checkpoint(out / CHECKPOINT)
    assert (config.model, config.bits, config.samples, config.epochs) == ("student", 8, 64, 1)
    assert ckpt["epoch"] == 1 and "optimizer" in ckpt
    assert type(model).__name__ == "QuantSeq2SeqLite"
    assert json.loads((out / SUMMARY).read_text())["epochs_done"] == 1
    assert "epoch 1/1" in capsys.readouterr().out


def test_float_student_loss_decreases(tmp_path):
    config = TrainConfig.for_model("student", bits=None, epochs=3, lr=1e-2, **TINY)
    summary = train(config, tmp_path, quiet=True, threads=1)
    losses = [h["val_loss"] for h in summary["history"]]
    assert len(losses) == 4  # epoch 0 is the untrained model
    assert losses[-1] < 0.8 * losses[0]
    assert summary["parameters"] == 6_819
    best = torch.load(tmp_path / BEST, weights_only=False)
    assert best["epoch"] == min(range(1, 4), key=lambda e: losses[e])


def test_resume_equals_an_uninterrupted_run(tmp_path):
    config = TrainConfig.for_model("student", bits=None, epochs=2, **TINY)
    train(config, tmp_path / "straight", quiet=True, threads=1)
    train(TrainConfig.for_model("student", bits=None, epochs=1, **TINY), tmp_path / "resumed", quiet=True,
          threads=1)
    train(config, tmp_path / "resumed", resume=True, quiet=True, threads=1)
    a = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=False)
    b = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=False)
    assert b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]


def test_student_distils_from_a_teacher_checkpoint(tmp_path):
    teacher = TrainConfig.for_model("teacher", hidden=8, epochs=1, **TINY)
    train(teacher, tmp_path / "teacher", quiet=True, threads=1)
    student = TrainConfig.for_model("student", bits=None, epochs=1, teacher=str(tmp_path / "teacher" / CHECKPOINT),
                                    **TINY)
    summary = train(student, tmp_path / "student", quiet=True, threads=1)
    assert summary["config"]["alpha"] == 0.6


def test_without_a_teacher_the_student_learns_from_the_truth(tmp_path):
    summary = train(TrainConfig.for_model("student", bits=None, epochs=1, **TINY), tmp_path, quiet=True, threads=1)
    assert summary["config"]["alpha"] == 0.0


def test_distillation_loss_blends_teacher_and_truth():
    pred, truth, soft = torch.zeros(2, 3), torch.ones(2, 3), torch.full((2, 3), 2.0)
    assert float(loss_fn(pred, truth, soft, 0.6)) == pytest.approx(0.6 * 4 + 0.4 * 1)
    assert float(loss_fn(pred, truth, None, 0.6)) == 1.0


def test_teacher_defaults_are_the_papers():
    config = TrainConfig.for_model("teacher")
    assert (config.hidden, config.layers, config.bits) == (128, 2, None)


def test_bad_bit_width_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["student", "--bits", "5"])
    assert "--bits must be 8, 6, 4 or float" in capsys.readouterr().err


def test_cosine_schedule_on_a_hand_worked_case():
    config = TrainConfig(lr=1.0, epochs=3, schedule="cosine")
    # floor = lr / 50 = 0.02; the middle epoch is halfway down: 0.02 + 0.49 * (1 + cos(pi / 2))
    assert [epoch_lr(config, e) for e in range(3)] == pytest.approx([1.0, 0.51, 0.02])
    assert epoch_lr(TrainConfig(lr=0.3, epochs=3), 2) == 0.3


def test_resume_keeps_the_checkpoints_schedule_unless_one_is_named(tmp_path):
    first = TrainConfig.for_model("student", bits=None, epochs=1, schedule="cosine", **TINY)
    train(first, tmp_path, quiet=True, threads=1)
    again = train(TrainConfig.for_model("student", bits=None, epochs=2, **TINY), tmp_path, resume=True,
                  quiet=True, threads=1)
    assert again["config"]["schedule"] == "cosine" and again["epochs_done"] == 2


def test_old_checkpoints_with_a_retired_no_op_option_still_load():
    data = TrainConfig().to_dict()
    assert TrainConfig.from_dict({**data, "tau_weight": 0.0}) == TrainConfig()
    with pytest.raises(ValueError, match="retired option 'tau_weight'"):
        TrainConfig.from_dict({**data, "tau_weight": 0.5})


def test_quantized_student_starts_from_its_float_shadow(tmp_path):
    shadow = TrainConfig.for_model("student", bits=None, sigmoid="hard", tanh="hard", epochs=1, **TINY)
    train(shadow, tmp_path / "shadow", quiet=True, threads=1)
    saved = torch.load(tmp_path / "shadow" / CHECKPOINT, weights_only=False)["model"]
    qat = TrainConfig.for_model("student", bits=8, sigmoid="hard", tanh="hard", epochs=1,
                                init=str(tmp_path / "shadow" / CHECKPOINT), **TINY)
    model = build_model(qat)
    assert type(build_model(shadow)).__name__ == "QuantSeq2SeqLite"  # the same architecture
    initial_weights(model, qat, torch.device("cpu"))
    for key, value in saved.items():
        assert torch.equal(model.state_dict()[key], value), key
    # A checkpoint of another architecture is refused by name, before any training.
    teacher = TrainConfig.for_model("teacher", hidden=8, epochs=1, **TINY)
    train(teacher, tmp_path / "teacher", quiet=True, threads=1)
    with pytest.raises(ValueError, match="--init .*teacher.*do not fit"):
        initial_weights(build_model(qat), TrainConfig(init=str(tmp_path / "teacher" / CHECKPOINT)),
                        torch.device("cpu"))


def test_reset_after_student_starts_from_the_float_pytorch_student(tmp_path):
    float_run = TrainConfig.for_model("student", bits=None, epochs=1, **TINY)
    train(float_run, tmp_path / "float", quiet=True, threads=1)
    float_student, _, _ = load_checkpoint(tmp_path / "float" / CHECKPOINT)
    from flimcc.models.train import config_from_args, parse_args

    qat = config_from_args(parse_args(["student", "--bits", "8", "--reset-after",
                                       "--init", str(tmp_path / "float" / CHECKPOINT)]))
    assert qat.linear_before_reset == 1 and qat.init
    shadow = build_model(dataclasses.replace(qat, bits=None, linear_before_reset=1))
    assert type(shadow).__name__ == "Seq2SeqLite"  # a float logistic student is PyTorch's GRU
    # The quantized architecture with its quantizers off, started from the float student,
    # computes the float student's function (the gate order and biases mapped exactly).
    from flimcc.models.quant_gru import QuantSeq2SeqLite

    off = QuantSeq2SeqLite(32, None, linear_before_reset=1)
    initial_weights(off, dataclasses.replace(qat, bits=None), torch.device("cpu"))
    x = torch.rand(4, 20, 1)
    with torch.no_grad():
        assert torch.allclose(off.eval()(x), float_student(x), atol=1e-5)
    # At 8 bits it starts near it (not from random weights).
    q = build_model(qat)
    initial_weights(q, qat, torch.device("cpu"))
    with torch.no_grad():
        assert (q.eval()(x) - float_student(x)).abs().max() < 0.1
    # The reset-before student (the default) has no such mapping: refused by name.
    with pytest.raises(ValueError, match="do not fit"):
        initial_weights(build_model(dataclasses.replace(qat, linear_before_reset=0)),
                        dataclasses.replace(qat, linear_before_reset=0), torch.device("cpu"))


def test_instrument_range_and_simulator_fields_from_the_command_line(capsys):
    from flimcc.models.train import config_from_args, parse_args

    config = config_from_args(parse_args(["student", "--instrument", "wide", "--sim", "photon_range=10:100",
                                          "--sim", "jitter_range=0:0"]))
    sim = config.sim_config
    assert sim.irf_center == (0.5, 3.0) and sim.photon_range == (10.0, 100.0) and sim.jitter_range == (0.0, 0.0)
    assert config_from_args(parse_args(["student"])).sim == TrainConfig().sim
    assert main(["student", "--sim", "irf_centre=2"]) == 2
    assert "--sim irf_centre=2: expected FIELD=VALUE" in capsys.readouterr().err
    assert main(["student", "--sim", "irf_fwhm=wide"]) == 2
    assert "'wide' is not a number" in capsys.readouterr().err


def test_a_missing_init_checkpoint_is_refused_with_nothing_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["student", "--quick", "--init", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    assert "none.pt" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ValueError, match="schedule must be one of constant, cosine"):
        TrainConfig(schedule="cosin")


def test_state_bits_from_the_command_line_reach_the_model(tmp_path, capsys):
    out = tmp_path / "state8"
    assert main(["student", "--quick", "--bits", "4", "--state-bits", "8", "--sigmoid", "hard", "--tanh", "hard",
                 "--out", str(out)]) == 0
    model, config, _ = load_checkpoint(out / CHECKPOINT)
    assert (config.bits, config.state_bits) == (4, 8) and model.encoder.state_bits == 8
    assert TrainConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "state_bits"}).state_bits is None
    for bad in (["--bits", "8", "--state-bits", "6"], ["--bits", "float", "--state-bits", "8"]):
        assert main(["student", "--quick", *bad, "--out", str(tmp_path / "bad")]) == 2
        assert "state bits" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_act_bits_from_the_command_line_reach_the_model(tmp_path, capsys):
    out = tmp_path / "w4a8"
    assert main(["student", "--quick", "--bits", "4", "--act-bits", "8", "--out", str(out)]) == 0
    model, config, _ = load_checkpoint(out / CHECKPOINT)
    assert (config.bits, config.act_bits, model.act_bits, model.state_bits) == (4, 8, 8, 8)
    for bad in (["--bits", "8", "--act-bits", "4"], ["--bits", "float", "--act-bits", "8"]):
        assert main(["student", "--quick", *bad, "--out", str(tmp_path / "bad")]) == 2
        assert "activation bits" in capsys.readouterr().err
    assert main(["student", "--quick", "--bits", "4", "--act-bits", "8", "--state-bits", "6",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "state bits 6" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
