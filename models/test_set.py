"""The fixed synthetic test set every model is measured on (evaluation, export checks, zoo cards)."""

from __future__ import annotations

import dataclasses

from .fli_data import FLIDataset, SimConfig, simulate

#: Simulator seed of the test set (training uses 1 and 2).
TEST_SEED = 3
DEFAULT_SAMPLES = 2000


def make_test_set(samples: int = DEFAULT_SAMPLES, n_gates: int | None = None) -> FLIDataset:
    """The fixed test set: default simulator settings (135 gates). A model with fewer gates
    (a short export, for tests) sees the first ``n_gates`` gates of the same decays."""
    data = simulate(samples, SimConfig(), TEST_SEED)
    if n_gates is None or n_gates == data.config.n_gates:
        return data
    if not 1 < n_gates < data.config.n_gates:
        raise ValueError(f"the test set has {data.config.n_gates} gates; a model with {n_gates} cannot be evaluated")
    return dataclasses.replace(data, config=SimConfig(n_gates=n_gates), x=data.x[:, :n_gates], y=data.y[:, :n_gates])
