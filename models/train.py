"""Training: the float teacher, and the student by knowledge distillation, float or QAT.

    python -m flimcc.models.train teacher|student [--quick] [--out DIR] [--epochs N]
        [--samples N] [--bits 8|6|4|float] [--act-bits N] [--state-bits N] [--alpha 0.6] [--teacher CKPT] [--resume]
        [--device auto|cpu|cuda] [--threads 1] [--lr LR] [--batch-size B] [--sigmoid hard] [--tanh hard]
        [--reset-after] [--init CKPT]

- Teacher: MSE on the three output curves (reference ``seeds.md`` section 5).
- Student: alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, truth), alpha = 0.6
  as the authors' selected model; the teacher's predictions are computed once. Without a
  teacher checkpoint the student learns from the truth alone (alpha = 0, "no KD").
  ``--bits 8|6|4`` trains :class:`QuantSeq2SeqLite` with quantization in the loop (QAT);
  ``--bits float`` the float :class:`Seq2SeqLite`.
- Data: the simulator with fixed seeds (train, validation), so a run is reproducible
  from its config; Adam, global-norm gradient clipping at 1.0.
- Every epoch writes ``DIR/checkpoint.pt`` (model and optimizer state, epochs done, config,
  history), ``DIR/best.pt`` (the same, of the epoch with the lowest validation loss so far)
  and ``DIR/train.json`` (config and history). ``--resume`` continues from the
  checkpoint; the shuffling of epoch k depends only on (seed, k), so an interrupted and
  resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from .fli_data import INSTRUMENTS, SimConfig, simulate
from .quant_gru import QuantSeq2SeqLite, from_torch_gru
from .seq2seq import Seq2Seq, Seq2SeqLite, count_parameters

#: Simulator seeds of the training and validation sets (the test set is evaluate.py's).
TRAIN_SEED, VAL_SEED = 1, 2
CHECKPOINT, BEST, SUMMARY = "checkpoint.pt", "best.pt", "train.json"


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; stored in every checkpoint (JSON-able)."""

    model: str = "student"  # "teacher" | "student"
    bits: int | None = 8  # student only: 8, 6, 4, or None for the float student
    state_bits: int | None = None  # quantized student: the hidden state's bits (None: as act_bits)
    act_bits: int | None = None  # quantized student: input, gates, candidate, biases (None: as bits)
    hidden: int = 32
    layers: int = 1  # GRU layers per side (the teacher has 2)
    linear_before_reset: int = 0  # quantized student; the float models are PyTorch's (1)
    sigmoid: str = "logistic"  # quantized student: "logistic" | "hard"
    tanh: str = "tanh"  # quantized student: "tanh" | "hard"
    samples: int = 20_000
    val_samples: int = 2_000
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    clip: float = 1.0
    alpha: float = 0.6
    teacher: str | None = None  # teacher checkpoint for distillation
    seed: int = 0
    schedule: str = "constant"  # learning rate over the epochs: "constant" | "cosine" (see epoch_lr)
    init: str | None = None  # checkpoint whose weights start the run (see initial_weights)
    sim: dict[str, Any] = dataclasses.field(default_factory=lambda: SimConfig().to_dict())

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.act_bits is not None and (self.bits is None or not self.bits <= self.act_bits <= 16):
            raise ValueError(f"activation bits {self.act_bits} need a quantized student with bits <= "
                             f"activation bits <= 16 (bits: {'float' if self.bits is None else self.bits})")
        floor = self.act_bits or self.bits
        if self.state_bits is not None and (self.bits is None or not floor <= self.state_bits <= 16):
            raise ValueError(f"state bits {self.state_bits} need a quantized student with bits and activation "
                             f"bits <= state bits <= 16 (bits: {'float' if self.bits is None else self.bits}"
                             f"{f', activation bits: {self.act_bits}' if self.act_bits else ''})")

    @classmethod
    def for_model(cls, model: str, **overrides) -> TrainConfig:
        """Defaults of the teacher (2 x 128, float) or the student (32, 8 bits)."""
        if model == "teacher":
            overrides = {"hidden": 128, "layers": 2, "bits": None, "linear_before_reset": 1, "alpha": 0.0,
                         **overrides}
        elif model != "student":
            raise ValueError(f"model must be 'teacher' or 'student', got {model!r}")
        return cls(model=model, **overrides)

    @property
    def sim_config(self) -> SimConfig:
        return SimConfig.from_dict(self.sim)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        for name, neutral in RETIRED_FIELDS.items():
            # A checkpoint from before a field was retired still loads when the field had
            # the value that made it a no-op; any other value trained something else.
            if name in data and data.pop(name) != neutral:
                raise ValueError(f"checkpoint config uses the retired option {name!r}; "
                                 f"this flimcc cannot reproduce that run")
        return cls(**data)


#: Options older runs stored, with the value under which they changed nothing.
RETIRED_FIELDS = {"tau_weight": 0.0}
SCHEDULES = ("constant", "cosine")


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``: constant, or cosine from ``lr`` down to ``lr / 50``
    at the last epoch (a late, small step size is what takes the curve error below the
    plateau a constant rate stalls on)."""
    if config.schedule == "constant" or config.epochs <= 1:
        return config.lr
    floor = config.lr / 50
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * epoch / (config.epochs - 1)))


def is_torch_gru(config: TrainConfig) -> bool:
    """Whether the config's student is PyTorch's float GRU (`Seq2SeqLite`, reset-after,
    logistic/tanh). A float student with a hard activation is the quantized architecture
    with its quantizers off (`QuantSeq2SeqLite(bits=None)`): the float shadow a QAT run
    starts from (``--init``)."""
    return config.model == "student" and config.bits is None and (config.sigmoid, config.tanh) == ("logistic", "tanh")


def build_model(config: TrainConfig) -> nn.Module:
    """The untrained model a config describes."""
    if config.model == "teacher":
        return Seq2Seq(config.hidden, config.layers)
    if is_torch_gru(config):
        return Seq2SeqLite(config.hidden)
    return QuantSeq2SeqLite(config.hidden, config.bits, config.linear_before_reset, config.sigmoid, config.tanh,
                            state_bits=config.state_bits, act_bits=config.act_bits)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """The trained model (eval mode), its config and the whole checkpoint dict."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    config = TrainConfig.from_dict(ckpt["config"])
    model = build_model(config).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval(), config, ckpt


def initial_weights(model: nn.Module, config: TrainConfig, device: torch.device) -> None:
    """Load ``config.init``'s weights into ``model`` (the run's architecture): every weight
    and bias of the checkpoint must have its place and shape; only the quantizers' own
    state (absent from a float shadow) may stay as built. This is how a quantized student
    starts from its trained float shadow instead of from random weights. A reset-after
    logistic/tanh student (``linear_before_reset=1``) takes the float PyTorch student's
    checkpoint as its shadow (`from_torch_gru`: the same function)."""
    ckpt = torch.load(config.init, map_location=device, weights_only=False)
    source = ckpt["model"]
    source_config = TrainConfig.from_dict(ckpt["config"]) if "config" in ckpt else None
    if (source_config is not None and is_torch_gru(source_config) and isinstance(model, QuantSeq2SeqLite)
            and (model.linear_before_reset, model.sigmoid, model.tanh) == (1, "logistic", "tanh")
            and source_config.hidden == model.hidden):
        # The float PyTorch student is this reset-after student with its quantizers off.
        source = from_torch_gru(source, model.hidden)
    target = model.state_dict()
    misfit = [k for k, v in source.items() if k not in target or target[k].shape != v.shape]
    if misfit:
        raise ValueError(f"--init {config.init}: its weights do not fit this model ({', '.join(misfit[:4])})")
    missing = [k for k in target if k not in source and "quant" not in k]
    if missing:
        raise ValueError(f"--init {config.init}: it has no {', '.join(missing[:4])}")
    model.load_state_dict(source, strict=False)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


@dataclasses.dataclass
class Data:
    """Tensors of one split: inputs, true curves and (for distillation) teacher curves."""

    x: torch.Tensor
    y: torch.Tensor
    soft: torch.Tensor | None = None


def make_data(config: TrainConfig, device: torch.device) -> tuple[Data, Data]:
    sim = config.sim_config
    train = simulate(config.samples, sim, TRAIN_SEED)
    val = simulate(config.val_samples, sim, VAL_SEED)
    as_tensor = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return Data(as_tensor(train.x), as_tensor(train.y)), Data(as_tensor(val.x), as_tensor(val.y))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Model output over ``x`` in batches, eval mode (restores the mode it found)."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def loss_fn(pred: torch.Tensor, truth: torch.Tensor, soft: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """MSE to the truth, blended with MSE to the teacher's curves when there are any."""
    hard = nn.functional.mse_loss(pred, truth)
    if soft is None or alpha == 0:
        return hard
    return alpha * nn.functional.mse_loss(pred, soft) + (1 - alpha) * hard


def _validate(model: nn.Module, val: Data, config: TrainConfig) -> dict[str, float]:
    """The training objective and the plain MSE to the truth (comparable across runs)."""
    pred = predict(model, val.x)
    return {"val_loss": float(loss_fn(pred, val.y, val.soft, config.alpha)),
            "val_mse": float(nn.functional.mse_loss(pred, val.y))}


def _epoch_order(config: TrainConfig, epoch: int, n: int) -> torch.Tensor:
    # Depends on (seed, epoch) only, so a resumed run shuffles like an uninterrupted one.
    return torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))


def _progress(quiet: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.5f}"), TimeElapsedColumn(), disable=quiet,
                    transient=True)


def _train_epoch(model, opt, train: Data, config: TrainConfig, epoch: int, quiet: bool) -> float:
    model.train()
    order = _epoch_order(config, epoch, len(train.x)).to(train.x.device)
    batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    total = 0.0
    with _progress(quiet) as bar:
        task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=len(batches), loss=float("nan"))
        for idx in batches:
            soft = None if train.soft is None else train.soft[idx]
            loss = loss_fn(model(train.x[idx]), train.y[idx], soft, config.alpha)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            opt.step()
            total += loss.item() * len(idx)
            bar.update(task, advance=1, loss=loss.item())
    return total / len(order)


def _save(out: Path, model, opt, config: TrainConfig, epoch: int, history: list[dict]) -> None:
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
            "config": config.to_dict(), "history": history}
    names = [CHECKPOINT]
    if history[-1]["val_loss"] <= min(h["val_loss"] for h in history):
        names.append(BEST)
    for name in names:
        tmp = out / (name + ".tmp")
        torch.save(ckpt, tmp)
        tmp.replace(out / name)  # atomic: an interrupted save leaves the previous one
    summary = {"config": config.to_dict(), "epochs_done": epoch, "history": history,
               "parameters": count_parameters(model)}
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")


def _attach_teacher(config: TrainConfig, train: Data, val: Data, device: torch.device, log) -> TrainConfig:
    """Cache the teacher's curves on both splits; the config, alpha = 0 without a teacher."""
    if config.model != "student" or config.alpha == 0:
        return config
    if config.teacher is None:
        log("no --teacher checkpoint: training on the ground truth only (alpha = 0)")
        return dataclasses.replace(config, alpha=0.0)
    teacher, _, _ = load_checkpoint(config.teacher, str(device))
    train.soft, val.soft = predict(teacher, train.x), predict(teacher, val.x)
    return config


def train(config: TrainConfig, out: str | os.PathLike, resume: bool = False, device: str = "auto",
          quiet: bool = False, threads: int | None = None) -> dict:
    """Train (or continue) the run ``config`` describes into ``out``; returns the summary.
    ``threads`` sets torch's CPU threads (None leaves them as they are)."""
    out = Path(out)
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    log = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    start, history, state = 0, [], None
    if resume and (out / CHECKPOINT).exists():
        state = torch.load(out / CHECKPOINT, map_location=dev, weights_only=False)
        config = _resumed_config(TrainConfig.from_dict(state["config"]), config, log)
        start, history = state["epoch"], state["history"]
        log(f"resuming {out / CHECKPOINT} after epoch {start}")
    torch.manual_seed(config.seed)
    model = build_model(config).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    elif config.init is not None:
        initial_weights(model, config, dev)
    train_data, val_data = make_data(config, dev)
    config = _attach_teacher(config, train_data, val_data, dev, log)
    # only now: a missing --init or --teacher checkpoint leaves no empty run folder behind
    out.mkdir(parents=True, exist_ok=True)
    if not history:
        history.append({"epoch": 0, "train_loss": None, **_validate(model, val_data, config), "seconds": 0.0})
    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = epoch_lr(config, epoch)
        train_loss = _train_epoch(model, opt, train_data, config, epoch, quiet)
        val = _validate(model, val_data, config)
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "train_loss": train_loss, **val, "seconds": seconds})
        _save(out, model, opt, config, epoch + 1, history)
        log(f"epoch {epoch + 1}/{config.epochs}: train {train_loss:.6f}  val {val['val_loss']:.6f}  "
            f"val MSE to truth {val['val_mse']:.6f}  ({seconds:.1f} s)")
    return json.loads((out / SUMMARY).read_text()) if (out / SUMMARY).exists() else {}


def _resumed_config(saved: TrainConfig, asked: TrainConfig, log) -> TrainConfig:
    """The checkpoint's config; on resume the number of epochs may be raised and a cosine
    schedule asked for (both only shape what is still to come; a resume that does not name
    a schedule keeps the checkpoint's)."""
    ignored = [f.name for f in dataclasses.fields(TrainConfig)
               if f.name not in ("epochs", "schedule") and getattr(saved, f.name) != getattr(asked, f.name)]
    if ignored:
        log(f"resume keeps the checkpoint's {', '.join(ignored)}")
    return dataclasses.replace(saved, epochs=max(saved.epochs, asked.epochs),
                               schedule=saved.schedule if asked.schedule == "constant" else asked.schedule)


# --- command line ------------------------------------------------------------------------

QUICK = {"samples": 64, "val_samples": 32, "epochs": 1, "batch_size": 32}


def _bits(text: str) -> int | None:
    if text == "float":
        return None
    if text not in {"4", "6", "8"}:
        raise argparse.ArgumentTypeError(f"--bits must be 8, 6, 4 or float, got {text!r}")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m flimcc.models.train", description=__doc__.split("\n\n")[0])
    p.add_argument("model", choices=["teacher", "student"])
    p.add_argument("--quick", action="store_true", help="a smoke run: 64 samples, 1 epoch")
    p.add_argument("--out", default=None, help="run folder (default build/runs/<model>)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--samples", type=int, help="training samples (validation: a tenth, at least 32)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--bits", type=_bits, default=8, help="student: 8, 6, 4 (QAT) or float")
    p.add_argument("--state-bits", type=int, help="quantized student: bits of the hidden state, "
                   "at least --bits (default: as --bits)")
    p.add_argument("--act-bits", type=int, help="quantized student: bits of everything but the weights (input, "
                   "gates, candidate, biases; default --bits): --bits 4 --act-bits 8 is W4A8")
    p.add_argument("--reset-after", dest="linear_before_reset", action="store_const", const=1,
                   help="quantized student: PyTorch's reset-after GRU (ONNX linear_before_reset=1), which "
                        "can start from the float student (--init)")
    p.add_argument("--sigmoid", choices=["logistic", "hard"], help="quantized student's gate activation")
    p.add_argument("--tanh", choices=["tanh", "hard"], help="quantized student's candidate activation")
    p.add_argument("--alpha", type=float, help="distillation weight (default 0.6)")
    p.add_argument("--teacher", help="teacher checkpoint for distillation")
    p.add_argument("--seed", type=int)
    p.add_argument("--instrument", choices=sorted(INSTRUMENTS),
                   help="the training data's instrument range (flimcc.models.fli_data.INSTRUMENTS); "
                        "default seq2seqlite, the one instrument of the authors' setting")
    p.add_argument("--sim", action="append", default=[], metavar="FIELD=VALUE",
                   help="set one simulator field (SimConfig), e.g. irf_center=0.5:3 or photon_range=20:2000")
    p.add_argument("--schedule", choices=SCHEDULES, help="learning rate over the epochs (default constant)")
    p.add_argument("--init", help="checkpoint to start from (a quantized student from its float shadow, "
                   "--bits float --sigmoid hard --tanh hard)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    # The per-step tensors are small (B x 3H): a second thread costs more in synchronisation
    # than it gains, and on a busy machine a quick run went from 1.4 s to 32 s with two.
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = dict(QUICK) if args.quick else {}
    if args.samples is not None:
        overrides |= {"samples": args.samples, "val_samples": max(32, args.samples // 10)}
    for name in ("epochs", "batch_size", "lr", "sigmoid", "tanh", "alpha", "teacher", "seed", "schedule", "init",
                 "state_bits", "act_bits", "linear_before_reset"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.model == "student":
        overrides["bits"] = args.bits
    sim = {**INSTRUMENTS[args.instrument or "seq2seqlite"], **dict(_sim_field(text) for text in args.sim)}
    if sim:
        overrides["sim"] = SimConfig(**{**SimConfig().to_dict(), **sim}).to_dict()
    return TrainConfig.for_model(args.model, **overrides)


def _sim_field(text: str) -> tuple[str, Any]:
    """``FIELD=VALUE`` of --sim: a number, ``low:high``, ``true``/``false`` or ``none``."""
    name, sep, value = text.partition("=")
    known = {f.name for f in dataclasses.fields(SimConfig)}
    if not sep or name not in known:
        raise ValueError(f"--sim {text}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(known))}")
    try:
        if value.lower() in ("none", "true", "false"):
            return name, {"none": None, "true": True, "false": False}[value.lower()]
        if ":" in value:
            return name, tuple(float(v) for v in value.split(":"))
        return name, int(value) if name == "n_gates" else float(value)
    except ValueError:
        raise ValueError(f"--sim {text}: {value!r} is not a number, low:high, true, false or none") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("build", "runs", args.model)
    t0 = time.perf_counter()
    try:
        train(config, out, resume=args.resume, device=args.device, threads=args.threads)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - t0:.1f} s: {Path(out) / CHECKPOINT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
