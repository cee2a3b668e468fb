"""The classical estimators the models are measured against (issue 14): each recovers what it
should on decays it can solve exactly, and the comparison table puts them beside a model."""

from __future__ import annotations

import numpy as np
import pytest

from flimcc.models import baselines, zoo
from flimcc.models.fli_data import SimConfig, _gaussian_irf, _linear_convolve, simulate

DT = 0.09


def _decay(tau1, tau2, frac, shift=0.0, cfg=SimConfig()):
    """Noise-free counts of one bi-exponential pixel through the simulator's own IRF."""
    t = cfg.time_axis
    dec = frac * np.exp(-t / tau1) + (1 - frac) * np.exp(-t / tau2)
    return 1000.0 * _linear_convolve(_gaussian_irf(cfg, np.array([shift])), dec[None])


def test_area_over_peak_hand_worked():
    """exp(-k dt / tau) sampled from its peak: the area is dt / (1 - exp(-dt / tau)) (a
    geometric series), the peak 1; a constant background of 5 counts is removed first."""
    tau = 1.3
    k = np.arange(400)
    counts = np.exp(-k * DT / tau)[None]
    assert baselines.area_over_peak(counts, DT)[0, 3] == pytest.approx(DT / (1 - np.exp(-DT / tau)), rel=1e-9)
    flat = np.r_[np.zeros(20), np.exp(-k * DT / tau)][None] * 100 + 5
    est = baselines.area_over_peak(flat, DT, background=20)[0]
    assert est[3] == pytest.approx(DT / (1 - np.exp(-DT / tau)), rel=1e-6) and np.isnan(est[:3]).all()


def test_least_squares_recovers_a_noise_free_pixel():
    """The fit's model is the simulator's: a shifted IRF convolved with two exponentials;
    noise-free counts, the IRF 2 gates late (the simulator's whole-gate jitter), are
    recovered to 1%."""
    irf = _gaussian_irf(SimConfig(), np.zeros(1))[0]
    counts = _decay(0.4, 2.0, 0.6, shift=2.0)
    tau1, tau2, frac, mean = baselines.least_squares(counts, DT, irf)[0]
    assert (tau1, tau2, frac) == (pytest.approx(0.4, rel=0.01), pytest.approx(2.0, rel=0.01), pytest.approx(0.6, abs=0.01))
    assert mean == pytest.approx(0.6 * 0.4 + 0.4 * 2.0, rel=0.01)


def test_phasor_resolves_two_components_and_reads_one():
    """Noise-free, no jitter: two components resolved from two harmonics (the half-gate
    sampling lag corrected to first order; the search's 0.02 ns grid) within 0.05 ns; a
    mono-exponential pixel is its normal lifetime."""
    irf = _gaussian_irf(SimConfig(), np.zeros(1))[0]
    counts = np.concatenate([_decay(0.5, 2.5, 0.5), _decay(1.2, 1.2, 1.0)])
    est = baselines.phasor(counts, DT, irf)
    assert est[0, :3] == pytest.approx([0.5, 2.5, 0.5], abs=0.05)
    assert est[1, 0] == pytest.approx(1.2, rel=0.03) and est[1, 1] == pytest.approx(1.2, rel=0.03)


def test_comparison_puts_models_beside_the_baselines():
    from flimcc.models import zoo
    from flimcc.models.comparison import compare, comparison_table

    data = simulate(40, SimConfig(), seed=9)
    rows = compare(data, {"student": zoo.path("seq2seqlite-float")})
    assert list(rows) == ["student", "area-over-peak", "least-squares", "phasor"]
    for r in rows.values():
        assert r["seconds_per_10k"] > 0 and set(r["errors"]) == {"tau1", "tau2", "f", "tau_mean"}
        assert 0 < r["errors"]["tau_mean"]["mae"] < 1.0
    assert np.isnan(rows["area-over-peak"]["errors"]["tau1"]["mae"])
    table = comparison_table(rows)
    assert table.count("\n") == 5 and "| least-squares |" in table


def test_zoo_cards_record_the_comparison(tmp_path):
    """`zoo compare` writes the model beside the baselines, in and out of distribution, into
    its card, and the zoo README gets the tables."""
    import json
    import shutil

    from flimcc.models import zoo

    for suffix in (".onnx", ".json"):
        shutil.copy(zoo.path("seq2seqlite-float").with_suffix(suffix), tmp_path)
    card = zoo.add_comparison("seq2seqlite-float", samples=30, zoo_dir=tmp_path)
    for label in ("test_set", "shifted"):
        rows = card["comparison"][label]["rows"]
        assert list(rows) == ["seq2seqlite-float", "area-over-peak", "least-squares", "phasor"]
        assert rows["seq2seqlite-float"]["errors"]["tau_mean"]["mae"] > 0
    assert card["comparison"]["shifted"]["config"]["irf_center"] == 2.0
    assert json.loads((tmp_path / "seq2seqlite-float.json").read_text())["comparison"] == json.loads(json.dumps(card["comparison"]))
    assert card["comparison"]["test_set"]["rows"]["area-over-peak"]["errors"]["tau1"]["mae"] is None
    readme = (tmp_path / "README.md").read_text()
    assert readme.count("Beside the classical baselines") == 2 and "| least-squares |" in readme


@pytest.mark.parametrize("name, max_bias", [("seq2seq", 0.02), ("seq2seqlite-float", 0.03)])
def test_shipped_float_models_beat_the_baselines_with_little_bias(name, max_bias):
    """The zoo's float models, recomputed (issue 14): on the test set their tau_mean is
    within `max_bias` of the truth on average (the teacher, trained 40 epochs: the issue's
    0.02 ns; the student trained on the ground truth reads +0.027), at least 30% better
    than area over peak; on 400 decays their tau1 and tau2 are no worse than the
    least-squares fit's."""
    from flimcc.models.comparison import compare
    from flimcc.models.test_set import make_test_set

    full = compare(make_test_set(2000), {name: zoo.path(name)}, methods=["area-over-peak"])
    ours, aop = full[name]["errors"]["tau_mean"], full["area-over-peak"]["errors"]["tau_mean"]
    assert abs(ours["bias"]) < max_bias and ours["mae"] <= 0.7 * aop["mae"]
    few = make_test_set(400)
    rows = compare(few, {name: zoo.path(name)}, methods=["least-squares"])
    for q in ("tau1", "tau2"):
        assert rows[name]["errors"][q]["mae"] <= rows["least-squares"]["errors"][q]["mae"], q


#: Shipped models that do not (yet) make issue 14's claim, and why; strict: a model that
#: starts making it fails the test until it leaves this list.
SHORT_OF_THE_CLAIM: dict[str, str] = {}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=SHORT_OF_THE_CLAIM[n], strict=True)) if n in SHORT_OF_THE_CLAIM else n
    for n in zoo.names()])
def test_every_shipped_model_beats_the_baselines_on_its_card(name):
    """Issue 14's claim for each zoo model, as `zoo compare` measured it on the test set
    (2,000 decays, peak counts 25-500): tau_mean at least 30% better than area over peak,
    tau1 and tau2 no worse than the least-squares fit, and compiled, 100 times its speed or
    more. (`zoo compare` recomputes the card;
    the float student's test above recomputes the claim itself.)"""
    card = zoo.card(name)
    rows = card["comparison"]["test_set"]["rows"]
    ours, aop, lsq = rows[name]["errors"], rows["area-over-peak"]["errors"], rows["least-squares"]["errors"]
    assert ours["tau_mean"]["mae"] <= 0.7 * aop["tau_mean"]["mae"]
    for q in ("tau1", "tau2"):
        assert ours[q]["mae"] <= lsq[q]["mae"], q
    # at >= 100x least squares' speed: the compiled design (the card's `hardware`)
    hw = card["hardware"]
    assert hw["board"] is not None, hw["did_not_fit"]
    assert rows["least-squares"]["seconds_per_10k"] >= 100 * hw["seconds_per_10k"], hw


#: The seeds' reproduction of the selected configuration (8-bit hard-sigmoid Seq2SeqLite,
#: distilled, alpha 0.6; `../shared/reference/seeds.md` section 7), full-decay channel.
SEEDS_STUDENT = {"rmse": 0.016240, "r2": 0.988987, "l2": 0.142927}


def within_ten_percent(full: dict) -> dict[str, bool]:
    """Issue 14: RMSE and L2 at most 10% above the seeds', R^2's shortfall from 1 at most
    10% above theirs (10% of R^2 itself would allow 0.89)."""
    return {"rmse": full["rmse"] <= 1.1 * SEEDS_STUDENT["rmse"],
            "l2": full["l2"] <= 1.1 * SEEDS_STUDENT["l2"],
            "r2": 1 - full["r2"] <= 1.1 * (1 - SEEDS_STUDENT["r2"])}


def test_within_ten_percent_on_hand_worked_figures():
    assert all(within_ten_percent({"rmse": 0.0178, "l2": 0.157, "r2": 0.9879}).values())
    assert within_ten_percent({"rmse": 0.0179, "l2": 0.158, "r2": 0.9878}) == {"rmse": False, "l2": False,
                                                                                 "r2": False}


def test_the_seeds_selected_configuration_is_within_ten_percent_of_their_reproduction():
    card = zoo.card("seq2seqlite-int8-hard")
    assert (card["bits"], card["architecture"]["sigmoid"], card["training"]["alpha"]) == (8, "hard", 0.6)
    assert card["training"]["teacher"] == "seq2seq"
    assert all(within_ten_percent(card["accuracy"]["full"]).values()), card["accuracy"]["full"]


#: Lifetime RMSE of an 8-bit-state Seq2SeqLite in a later study (``seeds.md`` section 7),
#: on a test distribution that reference does not give.
LATER_STUDY_RMSE = {"tau1": 0.20, "tau2": 0.22}


@pytest.mark.parametrize("name", ["seq2seqlite-int8", "seq2seqlite-int8-hard"])
def test_8_bit_students_lifetime_rmse_beats_least_squares(name):
    """On the test set (peak counts 25-500, tau1 and tau2 both drawn from 0.05-3 ns) the
    per-component lifetimes' RMSE of the 8-bit students is below the least-squares fit's."""
    rows = zoo.card(name)["comparison"]["test_set"]["rows"]
    for q in ("tau1", "tau2"):
        assert rows[name]["errors"][q]["rmse"] < rows["least-squares"]["errors"][q]["rmse"], q


@pytest.mark.xfail(strict=True, reason="the later study's 0.20/0.22 ns come from a test distribution the reference "
                   "does not give; on this test set the least-squares fit itself reads 0.56/1.20 ns (its card)")
def test_8_bit_student_reaches_the_later_studys_lifetime_rmse():
    errors = zoo.card("seq2seqlite-int8")["comparison"]["test_set"]["rows"]["seq2seqlite-int8"]["errors"]
    assert all(errors[q]["rmse"] <= LATER_STUDY_RMSE[q] for q in LATER_STUDY_RMSE), errors
