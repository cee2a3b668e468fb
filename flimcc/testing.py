"""pytest helpers for users' CI (registered as a pytest plugin when flimcc is installed).

- `assert_equivalent(expected, actual, numeric=True)`: fails with the readable graph diff.
- the `onnx_snapshot` fixture: `onnx_snapshot(model, "name")` compares a model with the
  checked-in `snapshots/name.onnx` next to the test file; run pytest with
  `--update-snapshots` (or `FLIMCC_UPDATE_SNAPSHOTS=1`) to write or rewrite it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .diff import diff
from .ir import ModelSource, load, save

UPDATE_ENV = "FLIMCC_UPDATE_SNAPSHOTS"


def assert_equivalent(expected: ModelSource, actual: ModelSource, numeric: bool = True,
                      atol: float = 1e-5, rtol: float = 1e-4, samples: int = 8) -> None:
    """Assert that two models are structurally (and, with `numeric`, numerically) the same."""
    a = expected if hasattr(expected, "graph") and hasattr(expected, "transform") else load(expected)
    b = actual if hasattr(actual, "graph") and hasattr(actual, "transform") else load(actual)
    result = diff(a, b, numeric=numeric, atol=atol, rtol=rtol, samples=samples)
    if not result.equivalent:
        pytest.fail("models differ:\n" + result.text(), pytrace=False)


def pytest_addoption(parser):
    parser.addoption("--update-snapshots", action="store_true", default=False,
                     help="flimcc: write or rewrite ONNX snapshots instead of comparing with them")


class Snapshot:
    def __init__(self, directory: Path, update: bool) -> None:
        self.directory, self.update = directory, update

    def __call__(self, model, name: str, numeric: bool = True) -> None:
        path = self.directory / f"{name}.onnx"
        if self.update:
            save(model, path)
            return
        if not path.exists():
            pytest.fail(f"no snapshot {path}; run pytest with --update-snapshots to create it", pytrace=False)
        assert_equivalent(load(path), model, numeric=numeric)


@pytest.fixture
def onnx_snapshot(request) -> Snapshot:
    update = request.config.getoption("--update-snapshots") or os.environ.get(UPDATE_ENV, "") not in ("", "0")
    return Snapshot(Path(request.fspath).parent / "snapshots", update)
