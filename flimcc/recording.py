"""FLIM recordings in: instrument files read as photon-count histograms, rebinned to a
model's gates and preprocessed as the seeds preprocess measured data.

`read_recording` returns a `Recording`: counts of shape (H, W, bins) (an image) or (N, bins)
(a list of pixels), the width of a bin in ns where the file says it, and what was read.
Formats (by extension):

- PicoQuant ``.ptu`` (``ptufile``): a T3 image's TCSPC histogram, frames and channels summed
  unless one is selected; the bin width is the file's TCSPC resolution.
- Becker & Hickl ``.sdt`` (``sdtfile``): the first (or selected) data block, (Y, X, bins) or
  (bins,); the bin width from the file's time axis.
- ``.tif``/``.tiff`` (``tifffile``): a stack of gate images, (bins, H, W), as gated SPAD
  cameras write them.
- ``.npy`` (H, W, bins) or (N, bins); ``.npz``: the array ``counts`` (or the only array), with
  ``bin_width_ns`` if present.
- ``.mat`` (scipy): the seeds' variable ``tp4d`` (H, W, bins).

Files without a bin width (npy, tiff, mat, npz without one) take the one the user gives, or
the model's gate width.

`to_gates` rebins to the model's gates: the bins of one gate are summed when the gate width
is an integer multiple of the bin width (exact); otherwise the recording is refused unless
resampling is asked for (the cumulative counts interpolated at the gate edges, which mixes
photons of neighbouring bins). A recording shorter than the model's window is refused; a
longer one is cut to the window.

`preprocess` is the seeds' treatment of measured data (``seeds.md`` section 3): subtract
the mean of the first K gates (the background before the rise), clip at 0, divide by the
peak. Pixels with fewer photons than a threshold are not decoded (their maps are NaN).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import warnings
from pathlib import Path

import numpy as np

from flimcc.errors import FlimccError

#: the readers by file extension
FORMATS = (".ptu", ".sdt", ".tif", ".tiff", ".npy", ".npz", ".mat")


class RecordingError(FlimccError):
    """A recording flimcc cannot read or cannot map onto the model's gates (exit 2)."""


@dataclasses.dataclass
class Recording:
    counts: np.ndarray  # (H, W, bins) or (N, bins), photon counts
    bin_width_ns: float | None  # None: the file does not say
    path: str
    kind: str  # what was read, for run.json ("PicoQuant PTU T3 image, 2 frames summed", ...)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.counts.shape[:-1])

    @property
    def bins(self) -> int:
        return int(self.counts.shape[-1])


def read_recording(path: str | Path, frame: int | None = None, channel: int | None = None) -> Recording:
    """Read the FLIM recording at `path` (see the module docstring); `frame`/`channel` select
    one of a PTU's frames or channels (default: summed) or an SDT's data block (channel)."""
    path = Path(path)
    shown = str(path)
    if not path.is_file():
        raise RecordingError(f"{shown}: no such file")
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise RecordingError(f"{shown}: not a FLIM recording flimcc reads (known: {', '.join(FORMATS)})")
    try:
        with _quiet_readers():
            rec = _READERS[ext](path, frame, channel)
    except RecordingError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is the file's fault: one line
        msg = str(e).splitlines()[0] if str(e) else ""
        raise RecordingError(f"{shown}: cannot read it as {ext[1:].upper()} ({type(e).__name__}: {msg})") from None
    counts = np.asarray(rec.counts)
    if counts.ndim not in (2, 3) or counts.shape[-1] < 1 or 0 in counts.shape:
        raise RecordingError(f"{shown}: expected photon counts (H, W, bins) or (N, bins), got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise RecordingError(f"{shown}: photon counts must be finite and >= 0")
    if not counts.any():
        raise RecordingError(f"{shown}: the recording holds no photons (an empty frame)")
    rec.counts = counts
    return rec


@contextlib.contextmanager
def _quiet_readers():
    """The readers log what they find odd in a file (ptufile: every bad tag); the error
    flimcc reports is one line."""
    loggers = [logging.getLogger(name) for name in ("ptufile", "sdtfile", "tifffile")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _ptu(path: Path, frame, channel) -> Recording:
    import ptufile

    with ptufile.PtuFile(path) as ptu:
        if not ptu.is_image:
            raise RecordingError(f"{path}: a PTU file without an image (T2/point mode); flimcc reads T3 images")
        data = ptu.decode_image(frame=frame, channel=channel, dtime=None, keepdims=True)  # T Y X C H
        resolution = float(ptu.tcspc_resolution)
        frames, channels = data.shape[0], data.shape[3]
    counts = np.asarray(data).sum(axis=(0, 3))
    what = [f"frame {frame}" if frame is not None else f"{frames} frame(s) summed",
            f"channel {channel}" if channel is not None else f"{channels} channel(s) summed"]
    return Recording(counts, resolution * 1e9, str(path), "PicoQuant PTU T3 image, " + ", ".join(what))


def _sdt(path: Path, frame, channel) -> Recording:
    import sdtfile

    with sdtfile.SdtFile(path) as sdt:
        block = channel or 0
        if block >= len(sdt.data):
            raise RecordingError(f"{path}: --channel {block}: the file has {len(sdt.data)} data block(s)")
        counts = np.asarray(sdt.data[block])
        times = np.asarray(sdt.times[block], dtype=np.float64)
    if counts.ndim == 1:
        counts = counts[None, :]
    width = float(np.median(np.diff(times))) * 1e9 if times.size > 1 else None
    return Recording(counts, width, str(path), f"Becker & Hickl SDT, data block {block}")


def _tiff(path: Path, frame, channel) -> Recording:
    import tifffile

    stack = tifffile.imread(path)
    if stack.ndim != 3:
        raise RecordingError(f"{path}: a TIFF recording is a stack of gate images (bins, H, W); got shape {stack.shape}")
    return Recording(np.moveaxis(stack, 0, -1), None, str(path), "TIFF stack of gate images (bins, H, W)")


def _npy(path: Path, frame, channel) -> Recording:
    return Recording(np.load(path, allow_pickle=False), None, str(path), "NumPy array")


def _npz(path: Path, frame, channel) -> Recording:
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.keys())
        key = "counts" if "counts" in keys else (keys[0] if len(keys) == 1 else None)
        if key is None:
            raise RecordingError(f"{path}: an .npz recording holds 'counts' (and optionally 'bin_width_ns'); "
                                 f"found {', '.join(keys)}")
        width = float(z["bin_width_ns"]) if "bin_width_ns" in keys else None
        return Recording(z[key], width, str(path), f"NumPy archive, array '{key}'")


def _mat(path: Path, frame, channel) -> Recording:
    from scipy.io import loadmat

    data = loadmat(path)
    if "tp4d" not in data:
        names = [k for k in data if not k.startswith("__")]
        raise RecordingError(f"{path}: a .mat recording holds the variable 'tp4d' (H, W, bins); found {', '.join(names)}")
    return Recording(data["tp4d"], None, str(path), "MATLAB tp4d (H, W, bins)")


_READERS = {".ptu": _ptu, ".sdt": _sdt, ".tif": _tiff, ".tiff": _tiff, ".npy": _npy, ".npz": _npz, ".mat": _mat}


def to_gates(rec: Recording, gates: int, gate_width_ns: float, bin_width_ns: float | None = None,
             resample: bool = False) -> tuple[np.ndarray, str]:
    """The recording's counts on the model's `gates` x `gate_width_ns` grid (float32, exact
    for counts below 2^24; float64 above), and
    how they were mapped (for run.json). `bin_width_ns`: the user's, for a file that does not
    say (default: the gate width); a file that says keeps its own unless the user's agrees."""
    width = rec.bin_width_ns if rec.bin_width_ns is not None else (bin_width_ns or gate_width_ns)
    if rec.bin_width_ns is not None and bin_width_ns is not None and not math.isclose(bin_width_ns, rec.bin_width_ns,
                                                                                       rel_tol=1e-3):
        raise RecordingError(f"--bin-width {bin_width_ns:g}: {rec.path} says its bins are {rec.bin_width_ns:g} ns")
    factor = gate_width_ns / width
    # float32 holds photon counts exactly below 2^24 per gate (half float64's memory on a
    # 500 x 500 x 405 recording)
    counts = rec.counts.astype(np.float32 if rec.counts.sum(axis=-1).max() < 2 ** 24 else np.float64)
    k = round(factor)
    if k >= 1 and math.isclose(factor, k, rel_tol=1e-4):
        if rec.bins < gates * k:
            raise RecordingError(f"{rec.path}: {rec.bins} bins of {width:g} ns ({rec.bins * width:g} ns) are shorter than "
                                 f"the model's window of {gates} gates x {gate_width_ns:g} ns ({gates * gate_width_ns:g} ns)")
        out = counts[..., :gates * k].reshape(*counts.shape[:-1], gates, k).sum(axis=-1)
        how = f"{k} bin(s) of {width:g} ns summed per {gate_width_ns:g} ns gate" if k > 1 else "bins are the gates"
        if rec.bins > gates * k:
            how += f"; {rec.bins - gates * k} bin(s) after the window dropped"
        return out, how
    if not resample:
        raise RecordingError(f"{rec.path}: its {width:g} ns bins do not divide the model's {gate_width_ns:g} ns gates "
                             f"(ratio {factor:.4g}); pass --resample to interpolate (mixes neighbouring bins)")
    if rec.bins * width < gates * gate_width_ns * (1 - 1e-9):
        raise RecordingError(f"{rec.path}: {rec.bins} bins of {width:g} ns ({rec.bins * width:g} ns) are shorter than "
                             f"the model's window of {gates} gates x {gate_width_ns:g} ns ({gates * gate_width_ns:g} ns)")
    warnings.warn(f"{rec.path}: {width:g} ns bins resampled to {gate_width_ns:g} ns gates (not an integer ratio)",
                  stacklevel=2)
    flat = counts.reshape(-1, rec.bins)
    edges = np.concatenate([np.zeros((flat.shape[0], 1)), np.cumsum(flat, axis=-1)], axis=-1)
    t_bins = np.arange(rec.bins + 1) * width
    t_gates = np.arange(gates + 1) * gate_width_ns
    cum = np.stack([np.interp(t_gates, t_bins, row) for row in edges])
    out = np.diff(cum, axis=-1).reshape(*counts.shape[:-1], gates)
    return out, f"resampled from {width:g} ns bins (cumulative counts interpolated)"


def preprocess(counts: np.ndarray, background: int = 10) -> np.ndarray:
    """The model's input from gate counts (..., gates): minus the mean of the first
    `background` gates (0: none), clipped at 0, divided by the peak (a pixel with no signal
    left stays 0). float32."""
    x = np.asarray(counts, dtype=np.float64)
    if background:
        x = x - x[..., :background].mean(axis=-1, keepdims=True)
    x = np.clip(x, 0.0, None)
    peak = x.max(axis=-1, keepdims=True)
    return np.divide(x, peak, out=np.zeros_like(x), where=peak > 0).astype(np.float32)
