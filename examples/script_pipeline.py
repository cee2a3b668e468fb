"""Scripting a pass pipeline in Python: one pass at a time, each checked against ORT.

Run: python examples/script_pipeline.py [MODEL] [OUT]
"""

import sys
from pathlib import Path

import numpy as np
from rich.console import Console

import flimcc
from flimcc.models.fli_data import simulate
from flimcc.pipeline import Pipeline, registry

HERE = Path(__file__).parent


def main(model_path: Path = HERE / "models" / "seq2seqlite_random.onnx", out: Path | None = None) -> dict:
    model = flimcc.load(model_path)

    # Verification inputs: simulated decay curves rather than uniform noise.
    decays = simulate(64, seed=1).x  # (64, 135, 1), peak-normalised
    inputs = {"x": decays.astype(np.float32)}

    # Passes are objects (qonnx Transformations) with typed options ...
    passes = registry()
    pipeline = Pipeline([passes["unroll-gru"](mode="scan"), passes["fold-constants"]()])
    # ... and the same pipeline has a textual form that parses back to it.
    assert Pipeline.parse(str(pipeline)) == pipeline

    run = pipeline.run(model, verify=True, inputs=inputs)
    Console().print(run.report.table())
    if out is not None:
        flimcc.save(run.model, out)
    return run.report.to_json()


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    main(*args)
