"""Scheduling P pixels' task graphs onto typed servers: SimPy, a fast path, and the baseline.

The scheduler is STOMP's as the seeds ran it (`../shared/reference/seeds.md` 9.3): every
ready task waits in its server type's queue; whenever servers are free, they take tasks
from it -- `greedy`: in arrival order (the order tasks became ready; STOMP's
`simple_policy_ver2`, every task having one eligible server type), `critical-path`: the
task with the longest path to its graph's end first, ties in arrival order. Pixels are
released at time 0 (a batch) or one every `interval` (a stream).

`simulate_simpy` runs it on SimPy (each started task a process holding its server for its
service time; the dispatch of an instant runs after every completion of that instant,
`env.timeout(0)`); `simulate_fast` is the same semantics on a plain event heap, for sweeps
(a test checks both give the same makespans and busy times). Neither materialises the P
copies: task i of pixel p is p * n + i.

`manual` is the baseline the speedups are measured against. "Manual scheduling" is not
defined in the paper's abstract; the reading taken (`pixel-serial`): one pixel at a time,
each alone on all the servers, scheduled as well as the policy can (its makespan is about
its critical path) -- a hand-written kernel that exploits the parallelism inside a pixel but
processes pixels one after another, as the seeds' HLS design does. The speedup then
measures what multi-pixel scheduling adds. Its size agrees with the paper: the seeds' own
Seq2SeqLite DAG bounds it by P x critical path / lower bound = 128 x 208 / 521 = 51x at
P = 128, against the 52.0x reported. `in-order` (each pixel's tasks issued in program
order, a stricter reading) is a switch. `lower_bound`: max(critical path + (P - 1) x interval, P x work of a
server type / its servers); a makespan below it is a bug.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from flimcc.errors import UnsupportedError

from .service import ServiceTable
from .taskgraph import TaskGraph

POLICIES = ("greedy", "critical-path")
BASELINES = ("pixel-serial", "in-order")


@dataclass(frozen=True)
class Result:
    """One simulation: when the last task ends, and the service time per server type."""

    makespan: int
    busy: dict[str, int]
    tasks: int

    def utilisation(self, table: ServiceTable) -> dict[str, float]:
        return {t: (b / (table.servers[t] * self.makespan) if self.makespan else 0.0) for t, b in self.busy.items()}


def _check(pixels: int, policy: str, interval: int) -> None:
    if policy not in POLICIES:
        raise UnsupportedError(f"--policy is '{policy}'; it must be one of {', '.join(POLICIES)}")
    if pixels < 1:
        raise UnsupportedError(f"--pixels: {pixels} is not a whole number >= 1")
    if interval < 0:
        raise UnsupportedError(f"--interval is {interval}; it must be >= 0")


class _Schedule:
    """What both engines share: `pixels` copies of a task graph as flat lists (task i of
    pixel p is p * n + i), the tasks still waiting for inputs, each server type's queue in
    the policy's order, free servers and busy time. The engines only decide when things
    happen: `complete` at a task's end, `dispatch` once every completion of an instant is in."""

    def __init__(self, tg: TaskGraph, pixels: int, table: ServiceTable, policy: str, interval: int):
        _check(pixels, policy, interval)
        self.types = list(table.servers)
        self.n = len(tg)
        self.time = tg.times(table)
        self.type = [self.types.index(table.server(k)) for k in tg.kinds]
        self.succ: list[list[int]] = [[] for _ in range(self.n)]
        for a, b in tg.edges:
            self.succ[a].append(b)
        self.sources = [i for i in range(self.n) if not tg.preds[i]]
        self.level = tg.bottom_levels(table) if policy == "critical-path" else None
        self.indeg = [len(p) for p in tg.preds] * pixels
        self.free = [table.servers[t] for t in self.types]
        self.busy = [0] * len(self.types)
        self.queues = [deque() if self.level is None else [] for _ in self.types]
        self.arrival = 0
        self.makespan = 0
        self.pixels = pixels

    def ready(self, gid: int) -> None:
        i = gid % self.n
        if self.level is None:
            self.queues[self.type[i]].append(gid)
        else:
            heapq.heappush(self.queues[self.type[i]], (-self.level[i], self.arrival, gid))
        self.arrival += 1

    def arrive(self, pixel: int) -> None:
        base = pixel * self.n
        for i in self.sources:
            self.ready(base + i)

    def complete(self, gid: int, now: int) -> None:
        i = gid % self.n
        self.free[self.type[i]] += 1
        self.makespan = now
        base = gid - i
        indeg = self.indeg
        for s in self.succ[i]:
            g = base + s
            indeg[g] -= 1
            if indeg[g] == 0:
                self.ready(g)

    def dispatch(self, start) -> None:
        """Every free server takes a queued task of its type: `start(task, time)`."""
        for t, q in enumerate(self.queues):
            while self.free[t] and q:
                gid = q.popleft() if self.level is None else heapq.heappop(q)[2]
                d = self.time[gid % self.n]
                self.free[t] -= 1
                self.busy[t] += d
                start(gid, d)

    def result(self) -> Result:
        return Result(self.makespan, dict(zip(self.types, self.busy)), self.n * self.pixels)


def simulate_fast(tg: TaskGraph, pixels: int, table: ServiceTable, policy: str = "greedy",
                  interval: int = 0) -> Result:
    """`pixels` copies of `tg` scheduled by `policy` (module docstring) on a plain event heap."""
    sc = _Schedule(tg, pixels, table, policy, interval)
    # (time, sequence, task); a negative task: pixel -1 - task arrives. Sequence numbers
    # order an instant's events as SimPy does: arrivals first, then by start
    events = [(p * interval, p, -1 - p) for p in range(1, pixels)] if interval else []
    seq = len(events)
    for p in range(1 if interval else pixels):
        sc.arrive(p)
    now = 0

    def start(gid: int, d: int) -> None:
        nonlocal seq
        heapq.heappush(events, (now + d, seq, gid))
        seq += 1

    while True:
        sc.dispatch(start)
        if not events:
            break
        now = events[0][0]
        while events and events[0][0] == now:
            _, _, gid = heapq.heappop(events)
            if gid < 0:
                sc.arrive(-1 - gid)
            else:
                sc.complete(gid, now)
    return sc.result()


def simulate_simpy(tg: TaskGraph, pixels: int, table: ServiceTable, policy: str = "greedy",
                   interval: int = 0) -> Result:
    """The same schedule as `simulate_fast`, run on SimPy's event loop: each started task a
    process holding its server for its service time."""
    import simpy

    sc = _Schedule(tg, pixels, table, policy, interval)
    env = simpy.Environment()
    pending = False

    def run(gid: int, d: int):
        yield env.timeout(d)
        sc.complete(gid, env.now)
        wake()

    def dispatch():
        nonlocal pending
        yield env.timeout(0)  # after every completion of this instant
        pending = False
        sc.dispatch(lambda gid, d: env.process(run(gid, d)))

    def wake() -> None:
        nonlocal pending
        if not pending:
            pending = True
            env.process(dispatch())

    def arrive(p: int):
        yield env.timeout(p * interval)
        sc.arrive(p)
        wake()

    for p in range(pixels):
        if interval and p:
            env.process(arrive(p))
        else:
            sc.arrive(p)
    wake()
    env.run()
    return sc.result()


def in_order(tg: TaskGraph, table: ServiceTable) -> int:
    """One pixel alone, its tasks issued in program order: a task starts once its inputs
    are ready, a server of its type is free, and the task before it has started."""
    pools = {t: [0] * k for t, k in table.servers.items()}  # each server's free time
    finish: list[int] = []
    last = 0
    for kind, d, ps in zip(tg.kinds, tg.times(table), tg.preds):
        pool = pools[table.server(kind)]
        start = max(last, max((finish[q] for q in ps), default=0), pool[0])
        heapq.heapreplace(pool, start + d)
        finish.append(start + d)
        last = start
    return max(finish, default=0)


def manual(tg: TaskGraph, pixels: int, table: ServiceTable, policy: str = "greedy", interval: int = 0,
           baseline: str = "pixel-serial") -> int:
    """The baseline's makespan: pixels one after another (each when it has arrived and the
    one before has finished), each alone on all the servers -- `pixel-serial`: scheduled
    by `policy` (its makespan: about its critical path), `in-order`: its tasks issued in
    program order (`in_order`)."""
    _check(pixels, policy, interval)
    if baseline not in BASELINES:
        raise UnsupportedError(f"--baseline is '{baseline}'; it must be one of {', '.join(BASELINES)}")
    one = simulate_fast(tg, 1, table, policy).makespan if baseline == "pixel-serial" else in_order(tg, table)
    end = 0
    for p in range(pixels):
        end = max(end, p * interval) + one
    return end


def lower_bound(tg: TaskGraph, pixels: int, table: ServiceTable, interval: int = 0) -> int:
    """max(critical path + (P - 1) x interval, ceil(P x work of a type / its servers))."""
    work = tg.work(table)
    bound = tg.critical_path(table) + (pixels - 1) * interval
    for t, w in work.items():
        bound = max(bound, -(-pixels * w // table.servers[t]))
    return bound
