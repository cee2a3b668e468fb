"""flimcc schedule (issue 15): task graphs from the models, the SimPy scheduler and its fast
path, the baseline and the lower bound, and the command line."""

from __future__ import annotations

import json
import random

import pytest
from conftest import run_cli

import flimcc
from flimcc.errors import UnsupportedError
from flimcc.models import zoo
from flimcc.schedule import (Options, TaskGraph, export_dag, load_service, lower_bound, manual, simulate_fast,
                             simulate_simpy, stage_graphs)
from flimcc.schedule.simulate import in_order

TABLE = load_service()

#: the seeds' STOMP graphs, 1 step, tasks per pixel (../shared/reference/seeds.md 9.2)
SEEDS_TASKS = {"seq2seqlite-float": {"encoder": 399, "decoder": 522}, "seq2seq": {"encoder": 3986, "decoder": 4618}}
#: the paper's speedups of STOMP-scheduled multi-pixel processing over manual scheduling
PAPER_SPEEDUP = {"seq2seqlite-float": 52.0, "seq2seq": 17.7}


@pytest.fixture(scope="module")
def graphs():
    cache = {}

    def get(name: str, **options) -> dict[str, TaskGraph]:
        key = (name, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = stage_graphs(flimcc.load(zoo.path(name), batch=1), Options(**options))
        return cache[key]
    return get


def _tiny() -> TaskGraph:
    """Two constant reads (5 each) feeding a multiply (2), then an add (2)."""
    tg = TaskGraph("tiny")
    a = tg.add("read_const", "a", ())
    b = tg.add("read_const", "b", ())
    m = tg.add("multiply", "m", (a, b))
    tg.add("add", "s", (m,))
    return tg


def test_hand_worked_schedule_bound_and_baseline():
    """One constant port, one DSP. One pixel: a 0-5, b 5-10, m 10-12, s 12-14 = 14; critical
    path 5 + 2 + 2 = 9; bound max(9, 10 const work) = 10. Two pixels (greedy, arrival
    order): reads a0 b0 a1 b1 end at 5, 10, 15, 20; m0 10-12, s0 12-14, m1 20-22, s1 22-24:
    24, bound max(9, 20) = 20; baseline: 2 x 14 = 28."""
    tg = _tiny()
    table = load_service().with_servers({"const": 1, "dsp": 1})
    assert tg.critical_path(table) == 9
    assert tg.work(table) == {"dsp": 4, "shared": 0, "const": 10, "data": 0}
    assert tg.bottom_levels(table) == [9, 9, 4, 2]
    assert simulate_fast(tg, 1, table).makespan == 14
    assert lower_bound(tg, 1, table) == 10
    two = simulate_fast(tg, 2, table)
    assert two.makespan == 24 and two.busy == {"dsp": 8, "shared": 0, "const": 20, "data": 0}
    assert lower_bound(tg, 2, table) == 20
    assert manual(tg, 2, table) == 28
    # a stream: pixel 1 arrives at 30, after pixel 0 is done: 30 + 14 = 44 (bound 9 + 30 = 39)
    assert simulate_fast(tg, 2, table, interval=30).makespan == 44
    assert lower_bound(tg, 2, table, interval=30) == 39
    assert manual(tg, 2, table, interval=30) == 44


def test_critical_path_first_beats_arrival_order_where_it_should():
    """One DSP, one constant port. x (add, 2) ends its graph; y (add, 2) starts a chain of
    two constant reads (5 + 5). Greedy takes x first (it arrived first): x 0-2, y 2-4,
    reads 4-9, 9-14 = 14. Critical path first takes y (level 12 against x's 2): y 0-2,
    reads 2-7, 7-12, x 2-4 = 12. In program order: as greedy, 14."""
    tg = TaskGraph("prio")
    tg.add("add", "x", ())
    y = tg.add("add", "y", ())
    r = tg.add("read_const", "r", (y,))
    tg.add("read_const", "s", (r,))
    table = load_service().with_servers({"dsp": 1, "const": 1})
    assert tg.bottom_levels(table) == [2, 12, 10, 5]
    assert simulate_fast(tg, 1, table, "greedy").makespan == 14
    assert simulate_fast(tg, 1, table, "critical-path").makespan == 12
    assert simulate_simpy(tg, 1, table, "critical-path").makespan == 12
    assert in_order(tg, table) == 14
    assert manual(tg, 3, table, "critical-path") == 36  # pixel-serial: 3 x 12
    assert manual(tg, 3, table, "critical-path", baseline="in-order") == 42


def _random_graph(seed: int, n: int = 60) -> TaskGraph:
    rng = random.Random(seed)
    kinds = list(TABLE.tasks)
    tg = TaskGraph(f"random{seed}")
    for i in range(n):
        deps = rng.sample(range(i), k=min(i, rng.randint(0, 3)))
        tg.add(rng.choice(kinds), f"n{i}", deps)
    return tg


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("policy", ["greedy", "critical-path"])
def test_fast_path_gives_simpys_schedule_on_random_graphs(seed, policy):
    tg = _random_graph(seed)
    table = load_service().with_servers({"dsp": 2, "const": 1, "shared": 1, "data": 3})
    for pixels, interval in ((1, 0), (5, 0), (7, 4)):
        fast = simulate_fast(tg, pixels, table, policy, interval)
        ref = simulate_simpy(tg, pixels, table, policy, interval)
        assert (fast.makespan, fast.busy) == (ref.makespan, ref.busy)
        assert lower_bound(tg, pixels, table, interval) <= fast.makespan


@pytest.mark.parametrize("policy", ["greedy", "critical-path"])
def test_fast_path_gives_simpys_makespans_on_the_student(graphs, policy):
    for tg in graphs("seq2seqlite-float").values():
        for pixels in (1, 8, 32):
            fast = simulate_fast(tg, pixels, TABLE, policy)
            ref = simulate_simpy(tg, pixels, TABLE, policy)
            assert (fast.makespan, fast.busy) == (ref.makespan, ref.busy)


@pytest.mark.parametrize("name", ["seq2seqlite-float", "seq2seq"])
def test_task_counts_near_the_seeds_graphs(graphs, name):
    """1-step graphs within 25% of the seeds' STOMP DAGs (tasks per pixel and step)."""
    gs = graphs(name)
    for stage, want in SEEDS_TASKS[name].items():
        assert abs(len(gs[stage]) / want - 1) <= 0.25, (stage, len(gs[stage]), want)


def test_zero_decoder_inputs_drop_their_kernels(graphs):
    """The decoder's input is zeros: its input products and their reads vanish, only the
    biases remain; the encoder reads its input and multiplies it."""
    gs = graphs("seq2seqlite-float")
    enc = [lab for lab in gs["encoder"].labels if "x_z_proj" in lab]
    dec = [lab for lab in gs["decoder"].labels if "x_z_proj" in lab or "x_r_proj" in lab or "x_h_proj" in lab]
    assert any("multiply" in lab for lab in enc) and dec == []


def test_graph_structure_follows_the_model(graphs):
    """Seq2SeqLite (1 layer, 32 units): per step 32 state reads and 32 writes; the hard
    sigmoid student has a clip where the logistic one has sinh/cosh; the int8 graphs come
    from the unrolled QONNX export (roll-loop)."""
    lite = graphs("seq2seqlite-float")["encoder"]
    assert lite.kinds.count("read_hidden") == 32 and lite.kinds.count("write_hidden") == 32
    assert lite.kinds.count("sinh_cosh") == 3  # z, r, candidate
    hard = graphs("seq2seqlite-int8-hard")["encoder"]
    # the hard sigmoid's clip; its candidate is the 8-bit quantizer's own clamp (no Tanh op)
    assert hard.kinds.count("clip") == 1 and hard.kinds.count("sinh_cosh") == 0
    teacher = graphs("seq2seq")["encoder"]
    assert teacher.kinds.count("write_hidden") == 2 * 128  # two layers


def test_steps_chain_the_state_through_memory(graphs):
    """A 3-step graph: three times the tasks of one step; step 1's state reads wait for
    step 0's writes; the critical path grows."""
    one = graphs("seq2seqlite-float")["encoder"]
    three = graphs("seq2seqlite-float", steps=3)["encoder"]
    assert len(three) == 3 * len(one)
    reads = [i for i, lab in enumerate(three.labels) if lab.startswith("t1/") and three.kinds[i] == "read_hidden"]
    assert reads and all(three.kinds[three.preds[i][0]] == "write_hidden" and three.labels[three.preds[i][0]]
                         .startswith("t0/") for i in reads)
    assert three.critical_path(TABLE) > 2 * one.critical_path(TABLE)


def test_switches_for_the_seeds_pitfalls(graphs):
    """Reset-before puts the candidate's product behind r (longer critical path); one chain
    for x.W and h.U (the seeds' teacher) lengthens the teacher's path, same tasks."""
    after = graphs("seq2seqlite-float", gru_form="reset-after")["encoder"]
    before = graphs("seq2seqlite-float", gru_form="reset-before")["encoder"]
    assert before.critical_path(TABLE) > after.critical_path(TABLE)
    plain = graphs("seq2seq")["encoder"]
    fused = graphs("seq2seq", fuse_chains=True)["encoder"]
    assert len(fused) == len(plain) and fused.critical_path(TABLE) > plain.critical_path(TABLE)
    with pytest.raises(UnsupportedError, match="no GRU nodes"):
        stage_graphs(flimcc.load(zoo.path("seq2seqlite-int8"), batch=1), Options(gru_form="reset-before"))


def test_study_reproduces_the_papers_shape(graphs):
    """Default servers, 1-step graphs: every makespan between the lower bound and twice it;
    at P = 128 the speedup over one pixel at a time is within a factor of two of the
    paper's (52.0x, 17.7x), and Seq2SeqLite gains more than Seq2Seq."""
    from flimcc.schedule import study

    speed = {}
    for name in ("seq2seqlite-float", "seq2seq"):
        gs = {k: v for k, v in graphs(name).items() if k != "post"}
        res = study(gs, [1, 8, 128], TABLE, engine="fast")
        for row in res["rows"]:
            for s in row["stages"].values():
                assert s["lower_bound"] <= s["scheduled_makespan"] <= 2 * s["lower_bound"], (name, row["pixels"], s)
        speed[name] = res["rows"][-1]["speedup"]
        assert 0.5 <= speed[name] / PAPER_SPEEDUP[name] <= 2, (name, speed[name])
    assert speed["seq2seqlite-float"] > speed["seq2seq"]


def test_export_dag_format(graphs):
    gs = graphs("seq2seqlite-float")
    dag = export_dag(gs, TABLE)
    assert len(dag["tasks"]) == sum(len(g) for g in gs.values())
    assert {t["type"] for t in dag["tasks"]} <= set(TABLE.servers)
    assert all({"id", "type", "time"} <= set(t) for t in dag["tasks"])
    assert [t["id"] for t in dag["tasks"]] == list(range(len(dag["tasks"])))
    assert all(a < b for a, b in dag["edges"])
    lo, hi = dag["stages"]["decoder"]
    assert all((lo <= a <= hi) == (lo <= b <= hi) for a, b in dag["edges"])  # no edge between stages


def test_cli_table_json_dag_and_plot(tmp_path):
    model = str(zoo.path("seq2seqlite-float"))
    r = run_cli("schedule", model, "--pixels", "1,4", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    row = res["rows"][1]
    assert row["pixels"] == 4 and {"scheduled_makespan", "manual_makespan", "speedup", "lower_bound", "tasks",
                                   "utilisation"} <= set(row)
    assert row["lower_bound"] <= row["scheduled_makespan"] and set(row["utilisation"]) == set(TABLE.servers)
    dag, png = tmp_path / "dag", tmp_path / "s.png"
    r = run_cli("schedule", model, "--pixels", "2", "--servers", "dsp=16", "--export-dag", str(dag), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert "dsp 16" in r.stdout and json.loads((dag / "dag.json").read_text())["tasks"]
    assert png.read_bytes().startswith(b"\x89PNG")
    assert run_cli("schedule", model, "--pixels", "2", "--plot", str(png)).returncode == 0  # its own plot: redrawn


@pytest.mark.parametrize("args, needle", [
    (["--pixels", "0"], "--pixels: '0'"),
    (["--servers", "gpu=4"], "unknown server type 'gpu'"),
    (["--servers", "dsp=x"], "--servers: 'dsp=x'"),
    (["--stages", "middle"], "--stages: 'middle'"),
])
def test_cli_refuses_bad_options(args, needle):
    r = run_cli("schedule", str(zoo.path("seq2seqlite-float")), *args)
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_refuses_a_model_without_gru_and_foreign_files(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    w = onnx.numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    plain = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), plain)
    r = run_cli("schedule", str(plain))
    assert r.returncode == 2 and r.stderr.strip() == f"error: {plain}: no recurrent loop (GRU) to schedule"
    user = tmp_path / "mine.png"
    user.write_bytes(b"not a plot")
    r = run_cli("schedule", str(zoo.path("seq2seqlite-float")), "--plot", str(user))
    assert r.returncode == 2 and "not drawn by flimcc" in r.stderr and user.read_bytes() == b"not a plot"
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    r = run_cli("schedule", str(zoo.path("seq2seqlite-float")), "--export-dag", str(folder))
    assert r.returncode == 2 and (folder / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------
# A compiled build as a dataflow


def test_dataflow_of_the_student_meets_its_estimate(zoo_build):
    """The 8-bit student as compiled: each loop's simulated cycles/pixel lies between the
    P x II x T floor (its busiest node kept busy every step) and the estimate (which adds
    the controller's overhead serially); 4 simulated steps extrapolate to the full run."""
    from flimcc.layout import loop_nodes
    from flimcc.schedule.dataflow import simulate_build, simulate_loop

    build = zoo_build("seq2seqlite-int8")
    rec = simulate_build(build, steps=4)
    model = flimcc.load(build / "model.onnx")
    for (node, loop), r in zip(loop_nodes(model), rec["loops"]):
        perf = loop.body_performance()
        floor = loop.get_nodeattr("iterations") * loop.get_nodeattr("pixels") * perf["max_cycles"]
        assert floor <= r["cycles"] <= loop.get_exp_cycles(), r
        assert r["ratio"] >= 0.95
    node, loop = next(loop_nodes(model))
    full = simulate_loop(node, loop)
    assert abs(full["cycles"] - rec["loops"][0]["cycles"]) <= 0.002 * full["cycles"]


def test_dataflow_against_the_rtl(small_build, tmp_path):
    """The small build's loops (P = 2: latency-bound): Verilator measures them (`flimcc
    rtlsim`) and the dataflow simulation reports the measurement beside its own figure. Its
    whole vectors move store-and-forward, as the estimate's latency (the sum of the nodes'
    cycles) assumes, while the RTL streams words through: it lies between the two."""
    import shutil

    build = tmp_path / "build"
    shutil.copytree(small_build, build)
    r = run_cli("rtlsim", str(build), "--pixels", "4", "--size-fifos")
    assert r.returncode == 0, r.stderr
    r = run_cli("schedule", str(build), "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["loops"] and rec["bottleneck"] in {x["loop"] for x in rec["loops"]}
    for loop in rec["loops"]:
        assert loop["rtlsim_cycles_per_pixel"], loop
        assert loop["rtlsim_cycles_per_pixel"] <= loop["cycles_per_pixel"] <= loop["estimated_cycles_per_pixel"], loop
    r = run_cli("schedule", str(build))
    assert r.returncode == 0 and "x estimate" in r.stdout and "bottleneck" in r.stdout
    r = run_cli("schedule", str(build), "--servers", "dsp=4")
    assert r.returncode == 2 and "--servers: not for a build folder" in r.stderr


def test_chained_stages_make_one_graph_per_pixel(graphs):
    """--chain-stages: encoder, decoder and read-out in one graph; the decoder's first state
    reads wait for the encoder's last writes, so the critical path is at least the sum."""
    sep = graphs("seq2seqlite-float")
    one = graphs("seq2seqlite-float", chain_stages=True)["pixel"]
    assert len(one) == sum(len(g) for g in sep.values())
    assert one.critical_path(TABLE) >= sep["encoder"].critical_path(TABLE) + sep["decoder"].critical_path(TABLE)
    first_dec_read = next(i for i, lab in enumerate(one.labels) if "/decoder/" in lab and one.kinds[i] == "read_hidden")
    assert any(one.kinds[p] == "write_hidden" and "/encoder/" in one.labels[p] for p in one.preds[first_dec_read])
