"""Training cost of the model family: seconds per optimizer step on the CPU.

    python benchmarks/bench_training.py [--batch 256] [--steps 135] [--threads 1] [--repeats 3]

For the teacher (2 x GRU 128), the float student (GRU 32, torch.nn.GRU) and the quantized
student at 8 and 4 bits (QuantGRU, a Python loop over T), it prints the best-of-N time of
one forward + backward + Adam step on a batch of random decays, and the implied time of an
epoch of 20,000 samples. The quantized student's cost is the per-step Python and Brevitas
overhead, nearly independent of the batch.
"""

from __future__ import annotations

import argparse
import time

import torch

from flimcc.models.quant_gru import QuantSeq2SeqLite
from flimcc.models.seq2seq import Seq2Seq, Seq2SeqLite, count_parameters

MODELS = {
    "teacher 2x128": Seq2Seq,
    "student float": Seq2SeqLite,
    "student int8 QAT": lambda: QuantSeq2SeqLite(bits=8),
    "student int4 QAT": lambda: QuantSeq2SeqLite(bits=4),
}
EPOCH_SAMPLES = 20_000


def step_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    opt = torch.optim.Adam(model.parameters())
    best = float("inf")
    for _ in range(repeats + 1):  # the first step pays one-off allocations
        start = time.perf_counter()
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=135)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, args.steps, 1)
    print(f"batch {args.batch}, T = {args.steps}, {args.threads} thread(s)")
    print(f"{'model':<18} {'params':>8} {'s/step':>8} {'s/epoch (20k)':>14}")
    for name, make in MODELS.items():
        model = make()
        seconds = step_seconds(model, x, args.repeats)
        epoch = seconds * -(-EPOCH_SAMPLES // args.batch)
        print(f"{name:<18} {count_parameters(model):>8,} {seconds:>8.3f} {epoch:>14.0f}")


if __name__ == "__main__":
    main()
