"""The PyTorch models: parameter counts against the paper's, forward shapes."""

from __future__ import annotations

import pytest
import torch

from flimcc.models.quant_gru import QuantSeq2SeqLite
from flimcc.models.seq2seq import (
    PAPER_PARAMS,
    Seq2Seq,
    Seq2SeqLite,
    count_parameters,
    parameter_report,
    seq2seq_parameters,
)


def test_teacher_matches_the_paper():
    assert count_parameters(Seq2Seq()) == PAPER_PARAMS["seq2seq"] == 299_139


def test_float_student_has_pytorchs_two_biases():
    # 192 more than the paper: torch.nn.GRU keeps a second bias vector per gate.
    assert count_parameters(Seq2SeqLite()) == 6_819 == PAPER_PARAMS["seq2seqlite"] + 2 * 3 * 32


def test_quantized_student_reset_before_matches_the_paper():
    assert count_parameters(QuantSeq2SeqLite(linear_before_reset=0)) == PAPER_PARAMS["seq2seqlite"] == 6_627
    assert count_parameters(QuantSeq2SeqLite(linear_before_reset=1)) == 6_819


@pytest.mark.parametrize("size, params", [((64, 2), 75_843), ((45, 2), 37_938), ((32, 2), 19_491),
                                          ((16, 2), 5_139), ((128, 2), 299_139)])
def test_closed_form_counts_match_the_ablation_table(size, params):
    hidden, layers = size
    assert seq2seq_parameters(hidden, layers, reset_after=True) == params
    assert count_parameters(Seq2Seq(hidden, layers)) == params


def test_report_explains_the_difference():
    report = parameter_report()
    for text in ("299,139", "6,819", "6,627", "reset_after=False", "192"):
        assert text in report


@pytest.mark.parametrize("make", [
    lambda: Seq2Seq(hidden=16), Seq2SeqLite,
    lambda: QuantSeq2SeqLite(bits=8), lambda: QuantSeq2SeqLite(bits=4, sigmoid="hard", linear_before_reset=1),
    lambda: QuantSeq2SeqLite(bits=6, sigmoid="hard", tanh="hard"), lambda: QuantSeq2SeqLite(bits=None),
], ids=["seq2seq", "seq2seqlite", "quant8", "quant4-hard-lbr1", "quant6-hard-hard", "quant-float"])
def test_forward_shape(make):
    model = make()
    with torch.no_grad():
        y = model(torch.rand(3, 11, 1))
    assert y.shape == (3, 11, 3)
    assert torch.isfinite(y).all()
