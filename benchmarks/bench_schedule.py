"""The seeds' STOMP study swept over P = 1..1024 for both float models (issue 15).

    python benchmarks/bench_schedule.py [--max-pixels 1024] [--policy greedy]

For the zoo's Seq2SeqLite and Seq2Seq (1-step graphs, default servers: DSP 128, shared 128,
const 128, data 256), each P = 1, 2, 4, ..., --max-pixels: the encoder + decoder makespan
(STOMP's greedy policy, the fast path), the pixel-serial baseline, the speedup, the lower
bound and the ratio to it, and the busiest server type. Then the simulator's own speed:
SimPy against the fast path on the same Seq2Seq batch, both timed in this run, with their
makespans compared. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import time
import warnings

warnings.filterwarnings("ignore")

PAPER = {"seq2seqlite-float": 52.0, "seq2seq": 17.7}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-pixels", type=int, default=1024)
    ap.add_argument("--policy", default="greedy", choices=["greedy", "critical-path"])
    args = ap.parse_args(argv)

    import flimcc
    from flimcc.models import zoo
    from flimcc.schedule import load_service, simulate_fast, simulate_simpy, stage_graphs, study

    table = load_service()
    pixels = [1 << k for k in range(args.max_pixels.bit_length()) if 1 << k <= args.max_pixels]
    t_all = time.perf_counter()
    graphs = {}
    for name in PAPER:
        graphs[name] = {k: v for k, v in stage_graphs(flimcc.load(zoo.path(name), batch=1)).items() if k != "post"}
        t0 = time.perf_counter()
        res = study(graphs[name], pixels, table, policy=args.policy, engine="fast")
        seconds = time.perf_counter() - t0
        g = res["graphs"]
        print(f"## {name}: encoder {g['encoder']['tasks']:,} + decoder {g['decoder']['tasks']:,} tasks per pixel, "
              f"critical paths {g['encoder']['critical_path']:,} / {g['decoder']['critical_path']:,} "
              f"({args.policy}; {seconds:.1f} s for the sweep)")
        print()
        print("| P | tasks | scheduled | lower bound | x bound | baseline | speedup | busiest server |")
        print("|---|---|---|---|---|---|---|---|")
        for r in res["rows"]:
            busiest = max(r["utilisation"], key=r["utilisation"].get)
            print(f"| {r['pixels']:,} | {r['tasks']:,} | {r['scheduled_makespan']:,} | {r['lower_bound']:,} | "
                  f"{r['scheduled_makespan'] / r['lower_bound']:.2f} | {r['manual_makespan']:,} | "
                  f"{r['speedup']:.1f}x | {busiest} {r['utilisation'][busiest]:.0%} |")
        at128 = next((r for r in res["rows"] if r["pixels"] == 128), None)
        if at128:
            print(f"\nat P = 128: {at128['speedup']:.1f}x against the paper's {PAPER[name]}x "
                  f"({at128['speedup'] / PAPER[name]:.2f} of it)\n")
    tg = graphs["seq2seq"]["encoder"]
    p = min(64, args.max_pixels)
    t0 = time.perf_counter()
    fast = simulate_fast(tg, p, table, args.policy)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = simulate_simpy(tg, p, table, args.policy)
    t_simpy = time.perf_counter() - t0
    print(f"## the simulator: Seq2Seq encoder, P = {p} ({fast.tasks:,} tasks)\n")
    print("| engine | seconds | tasks/s | makespan |")
    print("|---|---|---|---|")
    print(f"| SimPy | {t_simpy:.2f} | {fast.tasks / t_simpy:,.0f} | {ref.makespan:,} |")
    print(f"| fast path (event heap) | {t_fast:.2f} | {fast.tasks / t_fast:,.0f} | {fast.makespan:,} |")
    print(f"\nSimPy / fast path: {t_simpy / t_fast:.1f}x the time; makespans and busy times "
          f"{'equal' if (ref.makespan, ref.busy) == (fast.makespan, fast.busy) else 'DIFFER'}; "
          f"whole benchmark {time.perf_counter() - t_all:.0f} s")
    return 0 if (ref.makespan, ref.busy) == (fast.makespan, fast.busy) else 1


if __name__ == "__main__":
    raise SystemExit(main())
