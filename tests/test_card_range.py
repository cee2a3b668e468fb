"""flimcc run warns when a recording leaves its model card's training range (issue 14)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import run_cli

from flimcc.models import zoo
from flimcc.models.card_range import rise, sim_config, warnings_for
from flimcc.models.fli_data import simulate_counts

NAME = "seq2seqlite-float"


def test_rise_hand_worked():
    """A ramp 0, 2, 4, ..., 20 then flat: half the peak (10) at gate 5; 10% (2) at gate 1,
    90% (18) at gate 9: 8 gates."""
    ramp = np.r_[np.arange(0, 21, 2), np.full(5, 20)][None].astype(float)
    half, width = rise(ramp)
    assert half[0] == pytest.approx(5.0) and width[0] == pytest.approx(8.0)


@pytest.mark.parametrize("change, needle", [
    ({}, None),
    ({"irf_center": 3.0}, "rises to half its peak at"),
    ({"irf_fwhm": 0.8}, "10-90% rise takes"),
    ({"photon_range": (2000.0, 5000.0)}, "peak above 750 photons"),
    ({"photon_range": (3.0, 15.0)}, "peak below 25 photons"),
])
def test_warnings_name_what_leaves_the_range(change, needle):
    card = zoo.card(NAME)
    cfg = dataclasses.replace(sim_config(card), **change)
    counts, _ = simulate_counts(300, cfg.gate_width, cfg, seed=2)
    got = warnings_for(counts, card, NAME)
    if needle is None:
        assert got == []
    else:
        assert len(got) == 1 and needle in got[0] and NAME in got[0]


def test_flimcc_run_warns_and_records(tmp_path):
    cfg = dataclasses.replace(sim_config(zoo.card(NAME)), irf_center=3.0)
    counts, _ = simulate_counts(64, cfg.gate_width, cfg, seed=3)
    data = tmp_path / "late.npy"
    np.save(data, counts.reshape(8, 8, -1))
    r = run_cli("run", str(zoo.path(NAME)), str(data), "-o", str(tmp_path / "maps"), "--background", "5")
    assert r.returncode == 0, r.stderr
    assert "warning: the decay rises to half its peak at" in r.stderr
    rec = json.loads((tmp_path / "maps" / "run.json").read_text())
    assert len(rec["warnings"]) == 1 and "2." in rec["warnings"][0]


def test_a_model_trained_across_instruments_takes_one_the_others_warn_about():
    """The IRF at 2 ns, 0.4 ns wide, 200-2,000 photons at the peak (the zoo's shifted test
    instrument): outside the one-instrument student's card, inside the wide one's."""
    from flimcc.models.comparison import shifted_test_set

    shifted = shifted_test_set(300).config
    counts, _ = simulate_counts(300, shifted.gate_width, shifted, seed=4)
    assert any("rises to half its peak" in w for w in warnings_for(counts, zoo.card(NAME), NAME))
    wide = "seq2seqlite-float-wide"
    assert warnings_for(counts, zoo.card(wide), wide) == []
    assert zoo.card(wide)["training_data"]["sim_config"]["irf_center"] == [0.5, 3.0]
