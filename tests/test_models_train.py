"""Training: quick runs, loss going down, distillation, checkpoints and resume."""

from __future__ import annotations

import json

import pytest
import torch

from flimcc.models.train import (
    BEST,
    CHECKPOINT,
    SUMMARY,
    TrainConfig,
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
