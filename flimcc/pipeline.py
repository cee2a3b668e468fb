"""Pipelines of passes: the pass registry, the textual pipeline syntax, and the verified run.

What a pass is (`Pass`, its `Contract` and `Option`s, `register`) lives in
`flimcc.passbase`, below both this module and the passes; the names are re-exported here.
Pipelines are written like MLIR pass pipelines: `"unroll-gru{mode=scan},fold-weights"`.
"""

from __future__ import annotations

import dataclasses
import difflib
import contextlib
import json
import random
import re
import time
from typing import Iterable, Iterator, Mapping

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from .errors import FlimccError, PipelineSyntaxError, VerificationError
from .passbase import _REGISTRY, Contract, Option, Pass, register  # noqa: F401 - re-exported
from .execute import execute
from .verify import Comparison, compare, golden_run, make_inputs


def registry() -> dict[str, type[Pass]]:
    """All registered passes by name (importing flimcc.passes registers the built-in ones)."""
    import flimcc.passes  # noqa: F401  - registers on import (lazily: the passes pull in FINN)

    return dict(sorted(_REGISTRY.items()))


def get_pass(name: str) -> type[Pass]:
    passes = registry()
    if name not in passes:
        close = difflib.get_close_matches(name, passes, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise PipelineSyntaxError(f"unknown pass '{name}'{hint}; known passes: {', '.join(passes)}")
    return passes[name]


_ITEM = re.compile(r"\s*([A-Za-z0-9_\-]+)\s*(?:\{([^{}]*)\})?\s*(?:,|$)")


def _parse_options(body: str, pass_name: str) -> dict[str, str]:
    opts: dict[str, str] = {}
    for part in re.findall(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+', body):
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise PipelineSyntaxError(f"pass '{pass_name}': option '{part.strip()}' is not written as key=value")
        if value.startswith('"'):
            value = json.loads(value)
        if key in opts:
            raise PipelineSyntaxError(f"pass '{pass_name}': option '{key}' is given twice")
        opts[key] = value
    return opts


def parse_pipeline(text: str) -> list[Pass]:
    """Parse `"a,b{k=v,k2=v2}"` into pass instances."""
    passes: list[Pass] = []
    pos, text = 0, text.strip()
    if not text:
        raise PipelineSyntaxError("the pipeline is empty; `flimcc passes` lists the passes")
    while pos < len(text):
        m = _ITEM.match(text, pos)
        if not m or m.end() == pos:
            raise PipelineSyntaxError(f"cannot parse the pipeline at column {pos + 1}: {text[pos:pos + 30]!r}")
        name, body = m.group(1), m.group(2)
        cls = get_pass(name)
        raw = _parse_options(body, name) if body else {}
        known = {o.name: o for o in cls.options} | {o.attr: o for o in cls.options}
        kwargs = {}
        for key, value in raw.items():
            if key not in known:
                raise PipelineSyntaxError(f"pass '{name}': unknown option '{key}'; {cls.describe_options()}")
            kwargs[known[key].attr] = value
        passes.append(cls(**kwargs))
        pos = m.end()
        if text[pos - 1] == "," and pos == len(text):
            raise PipelineSyntaxError("the pipeline ends with a comma")
    return passes


@dataclasses.dataclass
class StageRecord:
    """One row of a pipeline report."""

    stage: str  # the pass's spec, or "input"
    contract: str
    seconds: float
    nodes_before: int
    nodes_after: int
    vs_previous: Comparison | None = None
    vs_golden: Comparison | None = None
    verdict: str = "not verified"  # ok | not verified | VIOLATED
    metrics: dict = dataclasses.field(default_factory=dict)  # what the pass measured (MACs, ...)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["vs_previous"] = self.vs_previous.to_json() if self.vs_previous else None
        d["vs_golden"] = self.vs_golden.to_json() if self.vs_golden else None
        return d


@dataclasses.dataclass
class PipelineReport:
    pipeline: str
    golden: str | None
    samples: int
    seed: int | None
    stages: list[StageRecord] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "pipeline": self.pipeline,
            "golden": self.golden,
            "samples": self.samples,
            "seed": self.seed,
            "stages": [s.to_json() for s in self.stages],
        }

    def table(self):
        """A rich Table for the terminal."""
        from rich.table import Table

        t = Table(title=f"pipeline: {self.pipeline}", title_justify="left")
        for col in ("stage", "contract", "time", "nodes", "max abs err", "max rel err", "vs golden", "verdict"):
            t.add_column(col, justify="right" if col not in ("stage", "contract", "verdict") else "left")
        for s in self.stages:
            prev, gold = s.vs_previous, s.vs_golden
            style = {"ok": "green", "VIOLATED": "bold red"}.get(s.verdict, "yellow")
            t.add_row(
                s.stage,
                s.contract,
                f"{s.seconds * 1000:.0f} ms",
                f"{s.nodes_before} -> {s.nodes_after}",
                _fmt_err(prev, exact=True),
                f"{prev.max_rel_err:.2e}" if prev else "-",
                f"{gold.max_abs_err:.2e}" if gold else "-",
                f"[{style}]{s.verdict}[/]",
            )
        if self.golden:
            source = f"seed {self.seed}" if self.seed is not None else "user inputs"
            t.caption = f"golden: {self.golden}; {self.samples} samples ({source})"
        return t


def metric_lines(report: PipelineReport) -> list[str]:
    """One line per stage with the scalar figures its pass measured (MACs, counts, ...)."""
    lines = []
    for stage in report.stages:
        scalars = {k: v for k, v in stage.metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        if scalars:
            shown = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in scalars.items())
            lines.append(f"{stage.stage}: {shown}")
    return lines


def _fmt_err(c: Comparison | None, exact: bool) -> str:
    if c is None:
        return "-"
    if exact and c.bit_exact:
        return "0 (bit-exact)"
    return f"{c.max_abs_err:.2e}"


@dataclasses.dataclass
class PipelineRun:
    model: ModelWrapper
    report: PipelineReport

    def __iter__(self) -> Iterator:
        return iter((self.model, self.report))


def check_contract(p: Pass, cmp: Comparison, expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> bool:
    if p.contract is Contract.EXACT:
        return cmp.bit_exact
    if p.contract is Contract.FLOAT:
        return all(
            np.allclose(np.asarray(got[k], np.float64), np.asarray(v, np.float64), atol=p.atol, rtol=p.rtol)
            for k, v in expected.items()
        )
    return p.bound is None or cmp.max_abs_err <= p.bound


@contextlib.contextmanager
def deterministic_names(salt: str):
    """qonnx and FINN name new tensors with Python's `random` (`make_new_valueinfo_name`):
    seed it from the pass so the same input gives byte-identical output, and give the
    caller's random state back afterwards."""
    state = random.getstate()
    random.seed(f"flimcc:{salt}")
    try:
        yield
    finally:
        random.setstate(state)


class Pipeline:
    """An ordered list of passes; `run` applies them, verifying each against its contract."""

    def __init__(self, passes: Iterable[Pass | type[Pass] | str]) -> None:
        self.passes: list[Pass] = []
        for p in passes:
            if isinstance(p, str):
                self.passes += parse_pipeline(p)
            elif isinstance(p, type) and issubclass(p, Pass):
                self.passes.append(p())
            elif isinstance(p, Pass):
                self.passes.append(p)
            else:
                raise TypeError(f"not a flimcc pass: {p!r}")

    @classmethod
    def parse(cls, text: str) -> Pipeline:
        return cls(parse_pipeline(text))

    def __str__(self) -> str:
        return ",".join(p.spec() for p in self.passes)

    def __repr__(self) -> str:
        return f"Pipeline({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.passes == other.passes

    def __len__(self) -> int:
        return len(self.passes)

    def run(
        self,
        model: ModelWrapper,
        verify: bool = True,
        inputs: Mapping[str, np.ndarray] | None = None,
        samples: int = 16,
        seed: int = 0,
    ) -> PipelineRun:
        """Apply the passes in order. With `verify`, run the golden model once on `inputs`
        (or `samples` seeded random inputs) and each stage after it; a pass that breaks its
        contract raises `VerificationError` naming the pass, output and worst element."""
        report = PipelineReport(str(self), None, 0, None)
        previous = None
        if verify:
            report.seed = None if inputs is not None else seed
            inputs = dict(inputs) if inputs is not None else make_inputs(model, samples, seed)
            report.samples = int(next(iter(inputs.values())).shape[0]) if inputs else 0
            t0 = time.perf_counter()
            golden, report.golden = golden_run(model, inputs)
            # A golden run on onnxruntime is the input model's own run (a QONNX model's Quant
            # ops rewritten to their exact float32 operations, flimcc.quant_ops): run it once.
            previous = golden if report.golden.startswith("onnxruntime") else execute(model, inputs)
            first = StageRecord("input", "-", time.perf_counter() - t0, len(model.graph.node), len(model.graph.node))
            first.vs_golden = compare(previous, golden)
            first.verdict = "ok"
            report.stages.append(first)
        for p in self.passes:
            before = len(model.graph.node)
            t0 = time.perf_counter()
            try:
                with deterministic_names(f"{len(report.stages)}:{p.spec()}"):
                    model = model.transform(p)
            except FlimccError:
                raise
            except Exception as e:  # noqa: BLE001 - a crash inside a pass is reported with its name
                raise FlimccError(f"pass '{p.spec()}' failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
            record = StageRecord(p.spec(), p.contract.value, time.perf_counter() - t0, before, len(model.graph.node),
                                 metrics=dict(p.metrics))
            report.stages.append(record)
            if not verify:
                continue
            outputs = execute(model, inputs)
            record.vs_previous = compare(outputs, previous)
            record.vs_golden = compare(outputs, golden)
            if not check_contract(p, record.vs_previous, previous, outputs):
                record.verdict = "VIOLATED"
                c = record.vs_previous
                limit = {Contract.EXACT: "bit-exact", Contract.FLOAT: f"atol {p.atol:g} + rtol {p.rtol:g}"}.get(
                    p.contract, f"bound {p.bound:g}" if p.bound is not None else ""
                )
                err = VerificationError(
                    f"pass '{p.spec()}' broke its {p.contract.value} contract ({limit}): output '{c.output}' "
                    f"at {list(c.index)} is {c.got:.6g}, the stage before gave {c.expected:.6g} "
                    f"(abs err {c.max_abs_err:.3g})"
                )
                err.report = report  # type: ignore[attr-defined]
                raise err
            record.verdict = "ok"
            previous = outputs
        return PipelineRun(model, report)
