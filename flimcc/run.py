"""`flimcc run`: a FLIM recording through a model or a compiled design, lifetime maps out.

The source is a build folder (the compiled design, run bit-exact: what the FPGA computes)
or an ONNX/QONNX model (onnxruntime for a standard float graph, flimcc's executor for
anything else). The recording (`flimcc.recording`) is rebinned to the model's gates and
preprocessed; every pixel with enough photons is decoded in batches, and the decoded curves
give tau1, tau2 and the short component's amplitude fraction (`extract_lifetimes`, the
seeds' rule) and tau_mean = frac * tau1 + (1 - frac) * tau2 (amplitude-weighted).

The work is `decode_block(job, start, stop)`: a pure function of the source, the recording
and a range of pixels, so that a parallel engine (a process pool here; Dask or Ray map the
same function) can spread a large recording without flimcc scheduling anything.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from pathlib import Path

import numpy as np

from flimcc.errors import FlimccError

#: the maps written, with their units
MAPS = {"tau1": "ns", "tau2": "ns", "frac": "1", "tau_mean": "ns", "photons": "counts"}
#: gates and gate width when the model's metadata does not say (the seeds' SwissSPAD3 grid)
DEFAULT_GATES, DEFAULT_GATE_WIDTH_NS = 135, 0.09
GATE_WIDTH_KEY = "flimcc.gate_width_ns"


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a worker needs to decode a range of pixels (picklable: paths and options)."""

    source: str
    data: str
    gate_width_ns: float | None = None  # None: the model's
    bin_width_ns: float | None = None
    background: int = 10
    min_photons: float = 0.0
    resample: bool = False
    frame: int | None = None
    channel: int | None = None
    batch: int = 4096
    curves: bool = False  # also the decoded curves (pixels, gates, 3): 1.6 kB per pixel


class Source:
    """A model or build to decode with: `decode(x)` maps (n, gates, 1) float32 inputs to
    (n, gates, 3) curves."""

    def __init__(self, path: str | Path):
        import flimcc

        path = Path(path)
        self.path = str(path)
        if path.is_dir():
            if not (path / "model.onnx").is_file() or not (path / "summary.json").is_file():
                raise FlimccError(f"{path}: not a flimcc build folder (no model.onnx and summary.json) nor a model")
            summary = json.loads((path / "summary.json").read_text())
            self.model = flimcc.load(path / "model.onnx")
            from flimcc.fastsim import FastModel

            self.fast = FastModel(self.model)
            if self.fast.region is not None:
                how = "its hardware as generated C, flimcc.fastsim"
            elif not self.fast.why_slow:
                how = "its loops as generated C, flimcc.fastsim"
            else:
                how = "flimcc's executor for " + "; ".join(f"{k} ({v})" for k, v in self.fast.why_slow.items())
            self.kind = f"compiled design for {summary.get('target', '?')}, bit-exact ({how})"
            origin = Path(summary.get("model", ""))
            self.meta = _metadata(origin) if origin.is_file() else {}
            self.meta.update({p.key: p.value for p in self.model.model.metadata_props})
            self.multiple = _pixels(self.model)
        elif path.is_file():
            self.model = flimcc.load(path)
            self.fast = None
            self.meta = {p.key: p.value for p in self.model.model.metadata_props}
            from flimcc.execute import is_standard_graph

            self.kind = "onnxruntime (float model)" if is_standard_graph(self.model.graph) else \
                "flimcc's executor (QONNX model)"
            self.multiple = 1
        else:
            raise FlimccError(f"{path}: no such build folder or model file")
        shape = self.model.get_tensor_shape(self.model.graph.input[0].name)
        self.gates = int(shape[1]) if shape and len(shape) == 3 and int(shape[1] or 0) > 0 else DEFAULT_GATES
        self.gate_width_ns = float(self.meta.get(GATE_WIDTH_KEY, DEFAULT_GATE_WIDTH_NS))

    def decode(self, x: np.ndarray) -> np.ndarray:
        from flimcc.execute import execute

        n = x.shape[0]
        pad = (-n) % self.multiple
        if pad:  # a compiled design runs whole frames of P pixels
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        name = self.model.graph.input[0].name
        out = self.fast({name: x}) if self.fast is not None else execute(self.model, {name: x})
        y = np.asarray(out[self.model.graph.output[0].name], dtype=np.float32)
        if y.shape != (n + pad, self.gates, 3):
            raise FlimccError(f"{self.path}: its output has shape {list(y.shape)}, not the (pixels, {self.gates}, 3) "
                              "decay components flimcc run turns into lifetimes")
        return y[:n]


def _metadata(path: Path) -> dict:
    import onnx

    try:
        return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    except Exception:  # noqa: BLE001 - the source model is only a hint for the gate width
        return {}


def _pixels(model) -> int:
    from flimcc.layout import loop_nodes

    return max([int(inst.get_nodeattr("pixels")) for _, inst in loop_nodes(model)] or [1])


_SOURCES: dict[str, Source] = {}


def _source(path: str) -> Source:
    """One Source per process (a worker decodes many blocks with it)."""
    if path not in _SOURCES:
        _SOURCES[path] = Source(path)
    return _SOURCES[path]


def prepare(job: Job):
    """(the recording's gate counts (pixels, gates), its spatial shape, notes for run.json)."""
    from flimcc.recording import read_recording, to_gates

    src = _source(job.source)
    rec = read_recording(job.data, frame=job.frame, channel=job.channel)
    gate = job.gate_width_ns or src.gate_width_ns
    counts, how = to_gates(rec, src.gates, gate, job.bin_width_ns, job.resample)
    return counts.reshape(-1, src.gates), rec.spatial_shape, {"read": rec.kind, "gates": how,
                                                              "bin_width_ns": rec.bin_width_ns}


@functools.lru_cache(maxsize=1)
def _prepared(job: Job):
    """`prepare` once per process and job (a worker decodes many blocks of one recording)."""
    return prepare(job)


def decode_block(job: Job, start: int, stop: int, counts: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The maps of pixels [start, stop) of the job's recording (flattened in C order):
    {"tau1", "tau2", "frac", "tau_mean", "photons"} float32, NaN where a pixel has fewer
    photons than ``min_photons`` (or none above background). `counts`: the recording's gate
    counts if already read (else read here, as a worker on another machine would)."""
    from flimcc.models.lifetimes import extract_lifetimes, mean_lifetime
    from flimcc.recording import preprocess

    src = _source(job.source)
    if counts is None:
        counts = _prepared(job)[0]
    block = counts[start:stop]
    photons = block.sum(axis=-1)
    x = preprocess(block, job.background)
    keep = (photons >= job.min_photons) & (x.max(axis=-1) > 0)
    out = {k: np.full(len(block), np.nan, np.float32) for k in MAPS}
    out["photons"] = photons.astype(np.float32)
    if job.curves:
        out["curves"] = np.full((len(block), src.gates, 3), np.nan, np.float32)
    idx = np.flatnonzero(keep)
    gate = job.gate_width_ns or src.gate_width_ns
    for lo in range(0, len(idx), job.batch):
        sel = idx[lo:lo + job.batch]
        y = src.decode(x[sel][..., None])
        if job.curves:
            out["curves"][sel] = y
        lt = extract_lifetimes(y, dt=gate)
        out["tau1"][sel], out["tau2"][sel], out["frac"][sel] = lt[:, 0], lt[:, 1], lt[:, 2]
        out["tau_mean"][sel] = mean_lifetime(lt[:, 0], lt[:, 1], lt[:, 2])
    return out


def run_recording(job: Job, out_dir: str | Path, workers: int = 1, progress=None) -> dict:
    """Decode the whole recording into `out_dir` (TIFF per map, a PNG figure, run.json);
    returns the run.json record. `workers` > 1 spreads blocks over a process pool."""
    from flimcc.build_folder import check_output_folder, write_folder

    out = check_output_folder(out_dir, inputs=[job.data, job.source])
    src = _source(job.source)
    t0 = time.perf_counter()
    counts, shape, notes = prepare(job)
    n = counts.shape[0]
    step = max(job.batch, src.multiple)
    blocks = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    maps = {k: np.empty(n, np.float32) for k in MAPS}
    curves = np.empty((n, src.gates, 3), np.float32) if job.curves else None
    done = 0

    def put(lo, hi, part):
        nonlocal done
        for k in MAPS:
            maps[k][lo:hi] = part[k]
        if curves is not None:
            curves[lo:hi] = part["curves"]
        done += hi - lo
        if progress is not None:
            progress(done, n)

    if workers > 1 and len(blocks) > 1:
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // workers)  # the C's OpenMP threads per worker
        with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(threads,)) as pool:
            futures = [(lo, hi, pool.submit(decode_block, job, lo, hi)) for lo, hi in blocks]
            for lo, hi, f in futures:
                put(lo, hi, f.result())
    else:
        for lo, hi in blocks:
            put(lo, hi, decode_block(job, lo, hi, counts))
    seconds = time.perf_counter() - t0
    skipped = int(np.isnan(maps["tau_mean"]).sum())
    warnings = _range_warnings(src, counts)
    record = {
        "source": job.source, "source_kind": src.kind, "data": job.data, "read": notes["read"],
        "shape": list(shape), "pixels": n, "decoded": n - skipped, "skipped": skipped,
        "skipped_why": f"fewer than {job.min_photons:g} photons in the window, or no signal above background",
        "gates": src.gates, "gate_width_ns": job.gate_width_ns or src.gate_width_ns, "rebinning": notes["gates"],
        "background_gates": job.background, "workers": workers,
        "seconds": round(seconds, 3), "pixels_per_second": round(n / seconds, 1) if seconds > 0 else None,
        "maps": {k: f"{k}.tif" for k in MAPS}, "figure": "maps.png",
        "curves": "curves.npy: (*shape, gates, 3) [full, short, long], NaN where skipped" if job.curves else None,
        "tau_mean": "frac * tau1 + (1 - frac) * tau2 (amplitude-weighted)",
        "warnings": warnings,
    }
    image = {k: v.reshape(shape) for k, v in maps.items()}

    def write(tmp: Path) -> None:
        _write_tiffs(tmp, image, record)
        if curves is not None:
            np.save(tmp / "curves.npy", curves.reshape(*shape, src.gates, 3))
        _write_figure(tmp / "maps.png", image, record)
        (tmp / "run.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    write_folder(out, write, kind="run")
    return record


def _range_warnings(src: Source, counts: np.ndarray) -> list[str]:
    """Where the recording leaves the training range of the source's model card (a zoo
    model's, found by its `flimcc.zoo` metadata): `flimcc.models.card_range`."""
    from flimcc.models import zoo
    from flimcc.models.card_range import warnings_for

    name = src.meta.get("flimcc.zoo")
    if not name:
        return []
    try:
        card = zoo.card(name)
    except (KeyError, OSError, ValueError):
        return []
    return warnings_for(counts, card, name)


def _worker_init(threads: int) -> None:
    """A pool worker's OpenMP threads (set before the fast simulator's library loads), so
    that workers x threads does not oversubscribe the cores."""
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _write_tiffs(folder: Path, image: dict[str, np.ndarray], record: dict) -> None:
    import tifffile

    for k, unit in MAPS.items():
        arr = image[k] if image[k].ndim == 2 else image[k][None, :]
        meta = {"map": k, "unit": unit, "gate_width_ns": record["gate_width_ns"], "source": record["source"],
                "data": record["data"], "written_by": "flimcc run"}
        tifffile.imwrite(folder / f"{k}.tif", arr.astype(np.float32), description=json.dumps(meta, sort_keys=True),
                         metadata=None, software="flimcc")


def _write_figure(path: Path, image: dict[str, np.ndarray], record: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 8))
    for ax, k in zip(axes.flat, MAPS):
        arr = image[k] if image[k].ndim == 2 else image[k][None, :]
        shown = ax.imshow(arr, cmap="viridis" if k != "photons" else "gray", interpolation="nearest", aspect="auto")
        ax.set_title(f"{k} ({MAPS[k]})")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    hist = axes.flat[5]
    values = image["tau_mean"][np.isfinite(image["tau_mean"])]
    hist.hist(values, bins=100, color="tab:blue")
    hist.set_xlabel("tau_mean (ns)")
    hist.set_ylabel("pixels")
    hist.set_title(f"tau_mean: {values.size:,} pixels, {record['skipped']:,} skipped")
    fig.suptitle(f"{Path(record['data']).name} through {Path(record['source']).name}")
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": "flimcc"})
    plt.close(fig)
