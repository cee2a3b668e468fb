"""`flimcc schedule`: the seeds' STOMP scheduling study, reproduced on SimPy.

Given so many DSPs and memory ports, how many pixels in flight, and how fast? A GRU
seq2seq model becomes one pixel's task graph per stage (`taskgraph`: scalar-row tasks as
the seeds' STOMP DAGs have them), P pixels' graphs are scheduled on typed servers
(`simulate`: STOMP's greedy policy or critical-path first, on SimPy or an equal fast path),
and the makespans are compared with the baseline and the lower bound (`study`). Task kinds,
service times and server counts are data (`service`, `stomp_fli.json`).
"""

from __future__ import annotations

from pathlib import Path

from .service import ServiceTable, load as load_service, parse_servers
from .simulate import BASELINES, POLICIES, Result, lower_bound, manual, simulate_fast, simulate_simpy
from .study import ENGINES, export_dag, parse_pixels, plot, study
from .taskgraph import GRU_FORMS, Options, TaskGraph, stage_graphs

__all__ = ["BASELINES", "ENGINES", "GRU_FORMS", "POLICIES", "Options", "Result", "ServiceTable", "TaskGraph",
           "export_dag", "load_service", "lower_bound", "manual", "parse_pixels", "parse_servers", "plot",
           "schedule_model", "simulate_fast", "simulate_simpy", "stage_graphs", "study"]


def schedule_model(model_path: str | Path, pixels: list[int], options: Options = Options(),
                   table: ServiceTable | None = None, policy: str = "greedy", interval: int = 0,
                   baseline: str = "pixel-serial", engine: str = "auto",
                   stages: list[str] | None = None) -> tuple[dict, dict[str, TaskGraph]]:
    """The study of the model at `model_path` (see `study`), and the graphs it ran."""
    import flimcc

    from flimcc.errors import UnsupportedError

    table = table or load_service()
    try:
        graphs = stage_graphs(flimcc.load(model_path, batch=1), options)
    except UnsupportedError as e:
        if str(e).startswith("--"):  # an option's own message
            raise
        raise UnsupportedError(f"{model_path}: {e}") from None
    if stages:
        unknown = [s for s in stages if s not in graphs]
        if unknown:
            raise UnsupportedError(f"--stages: '{unknown[0]}' is not a stage of {model_path} "
                                   f"(its stages: {', '.join(graphs)})")
        graphs = {s: graphs[s] for s in stages}
    result = study(graphs, pixels, table, policy, interval, baseline, engine)
    result.update({"model": str(model_path), "steps": options.steps, "gru_form": options.gru_form,
                   "fuse_chains": options.fuse_chains, "chain_stages": options.chain_stages})
    return result, graphs
