"""The small trained models shipped with flimcc (``models/zoo/``).

Each model is ``<name>.onnx`` with a model card ``<name>.json`` (architecture, parameters,
bit width, training data, training cost, accuracy, export check)::

    from flimcc.models import zoo
    zoo.names()                     # ['seq2seq', 'seq2seqlite-float', 'seq2seqlite-int8', ...]
    zoo.path("seq2seqlite-int8")    # Path to the ONNX/QONNX file
    zoo.card("seq2seqlite-int8")    # the model card as a dict

A trained checkpoint becomes a zoo entry with
``python -m flimcc.models.zoo ship CHECKPOINT NAME [--check N]``, which exports it, checks
the file against PyTorch on N test decays, measures accuracy on the test set of
:mod:`flimcc.models.test_set` and writes the card and ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent / "zoo"


def names() -> list[str]:
    """Names of the shipped models, sorted."""
    return sorted(p.stem for p in ZOO_DIR.glob("*.onnx"))


def path(name: str) -> Path:
    """The ONNX file of model ``name``; a ``KeyError`` lists the available names."""
    file = ZOO_DIR / f"{name}.onnx"
    if not file.is_file():
        raise KeyError(f"no zoo model {name!r}; available: {', '.join(names()) or 'none'}")
    return file


def card(name: str) -> dict:
    """The model card of ``name``."""
    return json.loads(path(name).with_suffix(".json").read_text())


def ship(checkpoint: str | Path, name: str, check_samples: int = 8, accuracy_samples: int = 2000,
         zoo_dir: Path = ZOO_DIR) -> dict:
    """Export ``checkpoint`` as zoo model ``name`` and write its card; returns the card."""
    import torch

    from .export import OPSET, check_export, export
    from .lifetimes import evaluate
    from .quant_gru import ACCUMULATOR_BITS
    from .seq2seq import count_parameters
    from .test_set import TEST_SEED, make_test_set
    from .train import SUMMARY, TRAIN_SEED, VAL_SEED, is_torch_gru, load_checkpoint, predict

    model, config, ckpt = load_checkpoint(checkpoint)
    if config.model == "student" and config.bits is None and not is_torch_gru(config):
        raise ValueError(f"{checkpoint}: a float shadow of the quantized student (no quantizers) is a "
                         "starting point for QAT (--init), not a zoo model")
    started = _init_runs(config)  # before anything is written: a broken chain is refused
    test = make_test_set(accuracy_samples)
    zoo_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = export(model, zoo_dir / f"{name}.onnx", test.config.n_gates, metadata={"flimcc.zoo": name})
    check = check_export(model, onnx_path, test.x[:check_samples])
    with torch.no_grad():
        accuracy = evaluate(predict(model, torch.from_numpy(test.x)).numpy(), test.y, test.labels)
    # A best.pt holds the history up to its epoch; the run's own summary has all of it.
    summary = Path(checkpoint).with_name(SUMMARY)
    history = json.loads(summary.read_text())["history"] if summary.is_file() else ckpt["history"]
    entry = {
        "name": name,
        "file": onnx_path.name,
        "format": "ONNX (GRU nodes)" if config.bits is None else "QONNX (unrolled over T)",
        "architecture": {"class": type(model).__name__, "hidden": config.hidden, "layers": config.layers,
                         "linear_before_reset": 1 if is_torch_gru(config) else config.linear_before_reset,
                         "sigmoid": config.sigmoid, "tanh": config.tanh,
                         "input": f"x (batch, {test.config.n_gates}, 1), peak-normalised decay",
                         "output": f"y (batch, {test.config.n_gates}, 3), [full, short, long] curves"},
        "parameters": count_parameters(model),
        "bits": "float" if config.bits is None else config.bits,
        **({"act_bits": config.act_bits} if config.act_bits not in (None, config.bits) else {}),
        **({"state_bits": model.state_bits} if config.bits is not None and model.state_bits != config.bits else {}),
        # reset-after's h R_h + Rb_h, requantized before r multiplies it (quant_gru.accumulator_quant)
        **({"accumulator_bits": ACCUMULATOR_BITS} if config.bits is not None and config.linear_before_reset else {}),
        "training_data": {"simulator": "flimcc.models.fli_data.simulate", "sim_config": config.sim,
                          "train_samples": config.samples, "train_seed": TRAIN_SEED,
                          "val_samples": config.val_samples, "val_seed": VAL_SEED},
        "training": {"epochs_run": history[-1]["epoch"], "selected_epoch": ckpt["epoch"],
                     "batch_size": config.batch_size, "lr": config.lr, "schedule": config.schedule,
                     "alpha": config.alpha, "teacher": config.teacher and Path(config.teacher).parent.name,
                     **({"started_from": [r["run"] for r in started]} if started else {}),
                     # the runs it started from are part of what it cost
                     "seconds": round(sum(h["seconds"] for h in history) + sum(r["seconds"] for r in started), 1),
                     "hardware": "CPU, 1 torch thread", "val_loss": ckpt["history"][-1]["val_loss"]},
        "accuracy": {"test_set": {"samples": accuracy_samples, "seed": TEST_SEED},
                     "evaluated_with": "PyTorch (the export check below ties the file to it)",
                     **accuracy.as_dict()},
        "export": {"opset": OPSET, "executor": "flimcc.execute", "check": str(check),
                   "max_abs_err": check.max_abs_err, "bit_exact": check.bit_exact,
                   "bytes": onnx_path.stat().st_size},
    }
    entry["comparison"] = comparison(onnx_path, name)
    entry["hardware"] = hardware(onnx_path)
    onnx_path.with_suffix(".json").write_text(json.dumps(entry, indent=2) + "\n")
    write_readme(zoo_dir)
    return entry


def _init_runs(config) -> list[dict]:
    """The chain of runs a run started from (``--init``), nearest first: run folder name,
    epochs and training seconds of each (from its train.json)."""
    from .train import SUMMARY, TrainConfig

    chain, seen = [], set()
    while config.init is not None and config.init not in seen:
        seen.add(config.init)
        summary = Path(config.init).with_name(SUMMARY)
        if not summary.is_file():
            raise ValueError(f"{config.init}: the run this model started from has no {SUMMARY} beside it")
        data = json.loads(summary.read_text())
        chain.append({"run": Path(config.init).parent.name, "epochs": data["epochs_done"],
                      "seconds": round(sum(h["seconds"] for h in data["history"]), 1)})
        config = TrainConfig.from_dict(data["config"])
    return chain


def comparison(onnx_path: Path, name: str, samples: int = 2000) -> dict:
    """The model beside the classical baselines (`comparison.compare`) on the test set and on
    another instrument (`comparison.shifted_test_set`): lifetime errors and seconds per
    10,000 pixels of each, as a card records them."""
    from .comparison import compare, shifted_test_set
    from .test_set import TEST_SEED, make_test_set

    out = {}
    for label, data, seed in (("test_set", make_test_set(samples), TEST_SEED),
                              ("shifted", shifted_test_set(samples), TEST_SEED + 1)):
        rows = compare(data, {name: onnx_path})
        out[label] = {"samples": samples, "seed": seed, "config": json.loads(json.dumps(data.config.to_dict())),
                      "rows": {k: {"errors": _no_nan(v["errors"]), "seconds_per_10k": round(v["seconds_per_10k"], 3)}
                               for k, v in rows.items()}}
    return out


#: Boards a card's hardware figure is tried on, smallest first.
HARDWARE_BOARDS = ("pynq-z2", "zcu104", "zcu102")


def hardware(onnx_path: Path, boards: tuple[str, ...] = HARDWARE_BOARDS) -> dict:
    """The model compiled (`flimcc compile`, 8-bit PTQ for a float model, FIFOs not sized)
    for the first board it fits: cycles per pixel, pixels and seconds per 10,000 pixels at
    the board's clock, with the boards it did not fit and why. The figure is flimcc's
    estimate; `flimcc compile` with FIFO sizing measures the loops' RTL against it."""
    import tempfile

    from flimcc.compile import compile_model
    from flimcc.errors import FlimccError

    refused = {}
    for board in boards:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                s = compile_model(onnx_path, board, Path(tmp) / "build", verify_samples=8, size_fifos=False)
            except FlimccError as e:
                refused[board] = str(e).splitlines()[0][:300]
                continue
        return {"board": board, "clock_mhz": s["clock_mhz"], "pixel_parallelism": s["pixel_parallelism"],
                "cycles_per_pixel": s["cycles_per_pixel"], "pixels_per_second": round(s["pixels_per_second"]),
                "seconds_per_10k": round(1e4 / s["pixels_per_second"], 4),
                "resources": {k: s["resources"][k] for k in ("LUT", "BRAM_18K", "DSP")},
                "bit_exact": s["verification"]["bit_exact"], "source": "flimcc compile (estimate, FIFOs not sized)",
                "did_not_fit": refused}
    return {"board": None, "did_not_fit": refused}


def _no_nan(errors: dict) -> dict:
    """NaN (a method that says nothing of a quantity) as null: cards are strict JSON."""
    return {q: {k: (None if isinstance(v, float) and v != v else v) for k, v in e.items()} for q, e in errors.items()}


def add_comparison(name: str, samples: int = 2000, zoo_dir: Path = ZOO_DIR) -> dict:
    """Measure `comparison` and `hardware` for a shipped model and write them into its card
    (and README)."""
    file = zoo_dir / f"{name}.onnx"
    entry = json.loads(file.with_suffix(".json").read_text())
    entry["comparison"] = comparison(file, name, samples)
    entry["hardware"] = hardware(file)
    file.with_suffix(".json").write_text(json.dumps(entry, indent=2) + "\n")
    write_readme(zoo_dir)
    return entry


def _bits(card: dict) -> str:
    """"4 (act 8, state 8)": weights, and what differs from them."""
    extra = [f"{label} {card[key]}" for key, label in (("act_bits", "act"), ("state_bits", "state")) if key in card]
    return f"{card['bits']} ({', '.join(extra)})" if extra else str(card["bits"])


def _hardware_lines(cards: list[dict]) -> list[str]:
    """The compiled designs' speed beside least squares' (the card's `hardware`)."""
    hw = [c for c in cards if "hardware" in c]
    if not hw:
        return []
    lines = ["", "Compiled (`flimcc compile` on the first of " + ", ".join(HARDWARE_BOARDS) + " the model fits; "
             "float models at 8-bit PTQ; flimcc's estimate at the board's clock), against least squares on the "
             "test set on this machine:", "",
             "| model | board | P | cycles/px | px/s | s / 10k px | x least squares | LUT / BRAM18 / DSP |",
             "|---|---|---|---|---|---|---|---|"]
    for c in hw:
        h = c["hardware"]
        if h["board"] is None:
            lines.append(f"| {c['name']} | fits none | | | | | | |")
            continue
        lsq = ((c.get("comparison") or {}).get("test_set", {}).get("rows", {}).get("least-squares") or {})
        ratio = f"{lsq['seconds_per_10k'] / h['seconds_per_10k']:,.0f}x" if lsq else "-"
        r = h["resources"]
        lines.append(f"| {c['name']} | {h['board']} | {h['pixel_parallelism']} | {h['cycles_per_pixel']:,.0f} "
                     f"| {h['pixels_per_second']:,} | {h['seconds_per_10k']:.3f} | {ratio} "
                     f"| {r['LUT']:,.0f} / {r['BRAM_18K']:,.0f} / {r['DSP']:,.0f} |")
    return lines


def write_readme(zoo_dir: Path = ZOO_DIR) -> Path:
    """``README.md``: one table row per model card in ``zoo_dir``."""
    lines = ["# flimcc model zoo", "",
             "Written by `python -m flimcc.models.zoo ship`; the cards (`*.json`) hold the details.",
             "Accuracy on the fixed test set of `flimcc.models.evaluate` (RMSE, R^2, L2 of the full decay;",
             "lifetime MAE in ns); the export column compares the file, run by `flimcc.execute`, with PyTorch.",
             "Training ran on a shared CPU with one torch thread; its seconds include that machine's load.", "",
             "| model | format | params | bits | RMSE | R^2 | L2 | tau1 MAE | tau2 MAE | train s | export |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    cards = [json.loads(file.read_text()) for file in sorted(zoo_dir.glob("*.json"))]
    for c in cards:
        full, life = c["accuracy"]["full"], c["accuracy"]["lifetimes"]
        lines.append(f"| {c['name']} | {c['format']} | {c['parameters']:,} | {_bits(c)} | {full['rmse']:.4f} "
                     f"| {full['r2']:.4f} | {full['l2']:.4f} | {life['tau1_mae']:.3f} | {life['tau2_mae']:.3f} "
                     f"| {c['training']['seconds']:.0f} | {c['export']['check']} |")
    for label, title in (("test_set", "the test set"), ("shifted", "another instrument (`comparison.shifted_test_set`)")):
        rows = {}
        for c in cards:
            rows.update((c.get("comparison") or {}).get(label, {}).get("rows", {}))
        if not rows:
            continue
        lines += ["", f"Beside the classical baselines, on {title} (`flimcc.models.baselines`; the file run by "
                  "`flimcc.execute`): MAE (bias) in ns, seconds per 10,000 pixels.", "",
                  "| estimator | tau1 | tau2 | f | tau_mean | s / 10k px |", "|---|---|---|---|---|---|"]
        for name, r in rows.items():
            cells = [("-" if r["errors"][q]["mae"] is None else
                      f"{r['errors'][q]['mae']:.3f} ({r['errors'][q]['bias']:+.3f})") for q in ("tau1", "tau2", "f",
                                                                                          "tau_mean")]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['seconds_per_10k']:.2f} |")
    lines += _hardware_lines(cards)
    readme = zoo_dir / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    return readme


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flimcc.models.zoo", description="The shipped models.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="names and formats")
    s = sub.add_parser("ship", help="export a checkpoint into the zoo with its card")
    s.add_argument("checkpoint", help="a run's best.pt or checkpoint.pt")
    s.add_argument("name")
    s.add_argument("--check", type=int, default=8, help="test decays for the export check")
    c = sub.add_parser("compare", help="measure shipped models beside the classical baselines into their cards")
    c.add_argument("names", nargs="*", help="models (default: all)")
    c.add_argument("--samples", type=int, default=2000)
    args = p.parse_args(argv)
    if args.command == "compare":
        for name in args.names or names():
            rows = add_comparison(name, args.samples)["comparison"]["test_set"]["rows"]
            print(f"{name}: tau_mean MAE {rows[name]['errors']['tau_mean']['mae']:.3f} ns "
                  f"(area over peak {rows['area-over-peak']['errors']['tau_mean']['mae']:.3f})")
        return 0
    if args.command == "list":
        for name in names():
            c = card(name)
            print(f"{name:<22} {c['format']:<26} {c['parameters']:>8,} params  bits {_bits(c)}")
        return 0
    try:
        print(json.dumps(ship(args.checkpoint, args.name, args.check)["export"], indent=2))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
