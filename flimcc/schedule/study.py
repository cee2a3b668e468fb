"""The scheduling study: makespans of P pixels against the baseline, stage by stage.

Each stage's graph ("encoder", "decoder", "post") runs as its own batch of P pixels, one
stage after another, as the seeds' STOMP traces run them; a row sums the stages and keeps
each one's figures under "stages".
"""

from __future__ import annotations

from pathlib import Path

from flimcc.errors import UnsupportedError

from .service import ServiceTable
from .simulate import lower_bound, manual, simulate_fast, simulate_simpy
from .taskgraph import TaskGraph

ENGINES = ("auto", "simpy", "fast")
#: `auto` runs SimPy up to this many tasks per simulation, the fast path above (same makespans)
SIMPY_MAX_TASKS = 200_000


def parse_pixels(text: str) -> list[int]:
    """``1,8,128`` -> [1, 8, 128]; refuses anything else naming it."""
    out = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        if not part.isdigit() or int(part) < 1:
            raise UnsupportedError(f"--pixels: '{part}' is not a whole number >= 1")
        out.append(int(part))
    if not out:
        raise UnsupportedError("--pixels: no pixel count given (e.g. 1,8,128)")
    return out


def study(graphs: dict[str, TaskGraph], pixels: list[int], table: ServiceTable, policy: str = "greedy",
          interval: int = 0, baseline: str = "pixel-serial", engine: str = "auto") -> dict:
    """Rows of `pixels_count`, scheduled and baseline makespans, speedup, lower bound, tasks,
    utilisation per server type; the per-pixel facts of each graph beside them."""
    if engine not in ENGINES:
        raise UnsupportedError(f"--engine is '{engine}'; it must be one of {', '.join(ENGINES)}")
    rows = []
    for p in pixels:
        stages = {}
        for name, tg in graphs.items():
            use = engine if engine != "auto" else ("simpy" if len(tg) * p <= SIMPY_MAX_TASKS else "fast")
            res = (simulate_simpy if use == "simpy" else simulate_fast)(tg, p, table, policy, interval)
            base = manual(tg, p, table, policy, interval, baseline)
            stages[name] = {"scheduled_makespan": res.makespan, "manual_makespan": base,
                            "speedup": base / res.makespan if res.makespan else 0.0,
                            "lower_bound": lower_bound(tg, p, table, interval), "tasks": res.tasks,
                            "busy": res.busy, "utilisation": _rounded(res.utilisation(table)), "engine": use}
        span = sum(s["scheduled_makespan"] for s in stages.values())
        base = sum(s["manual_makespan"] for s in stages.values())
        busy = {t: sum(s["busy"][t] for s in stages.values()) for t in table.servers}
        rows.append({"pixels": p, "scheduled_makespan": span, "manual_makespan": base,
                     "speedup": round(base / span, 4) if span else 0.0,
                     "lower_bound": sum(s["lower_bound"] for s in stages.values()),
                     "tasks": sum(s["tasks"] for s in stages.values()),
                     "utilisation": _rounded({t: b / (table.servers[t] * span) if span else 0.0
                                              for t, b in busy.items()}),
                     "stages": stages})
        for s in stages.values():
            s["speedup"] = round(s["speedup"], 4)
    return {"policy": policy, "baseline": baseline, "interval": interval, "servers": dict(table.servers),
            "graphs": {name: {"tasks": len(tg), "edges": len(tg.edges), "critical_path": tg.critical_path(table),
                              "work": tg.work(table), "tasks_by_server": tg.counts(table)}
                       for name, tg in graphs.items()},
            "rows": rows}


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in d.items()}


def export_dag(graphs: dict[str, TaskGraph], table: ServiceTable) -> dict:
    """One pixel's graphs as one JSON object: ``{"tasks": [{"id", "type", "time", ...}],
    "edges": [[a, b]], "stages": {name: [first id, last id]}}`` (ids run on across the
    stages; no edge joins two stages)."""
    tasks, edges, stages = [], [], {}
    for name, tg in graphs.items():
        base = len(tasks)
        part = tg.to_json(table)
        for t in part["tasks"]:
            tasks.append({**t, "id": base + t["id"], "stage": name})
        edges += [[a + base, b + base] for a, b in part["edges"]]
        stages[name] = [base, len(tasks) - 1]
    return {"tasks": tasks, "edges": edges, "stages": stages}


def plot(result: dict, path: str | Path, title: str) -> None:
    """Makespans (scheduled, baseline, lower bound) and speedup against P; utilisation per
    server type against P."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    ps = [r["pixels"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for key, label in (("scheduled_makespan", f"scheduled ({result['policy']})"),
                       ("manual_makespan", f"baseline ({result['baseline']})"), ("lower_bound", "lower bound")):
        ax.plot(ps, [r[key] for r in rows], marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel="pixels P", ylabel="makespan (time units)", title="makespan")
    ax.legend()
    ax = axes[1]
    ax.plot(ps, [r["speedup"] for r in rows], marker="o")
    ax.set(xscale="log", xlabel="pixels P", ylabel="speedup over the baseline", title="speedup")
    ax = axes[2]
    for t in result["servers"]:
        ax.plot(ps, [r["utilisation"][t] for r in rows], marker="o", label=f"{t} ({result['servers'][t]})")
    ax.set(xscale="log", ylim=(0, 1.05), xlabel="pixels P", ylabel="utilisation", title="servers")
    ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": "flimcc schedule"})
    plt.close(fig)
