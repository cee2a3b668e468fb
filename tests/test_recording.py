"""FLIM recordings in (issue 13): every reader gives the same photons, rebinning to the
model's gates is exact for integer ratios and refused otherwise, the seeds' preprocessing,
and bad input refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from flimcc.recording import Recording, RecordingError, preprocess, read_recording, to_gates

H, W = 6, 5


@pytest.fixture(scope="module")
def photons():
    """A synthetic image in 30 ps bins (405 bins = the model's 135 x 90 ps window) and the
    same photons in 90 ps bins."""
    from flimcc.models.fli_data import simulate_counts

    counts30, _ = simulate_counts(H * W, bin_width_ns=0.03, seed=3)
    counts30 = counts30.reshape(H, W, -1)
    return counts30, counts30.reshape(H, W, 135, 3).sum(axis=-1)


def test_ptu_and_npy_of_the_same_photons_give_the_same_gates(tmp_path, photons):
    import ptufile

    counts30, counts90 = photons
    ptufile.imwrite(tmp_path / "img.ptu", counts30.astype(np.uint16), global_resolution=25e-9,
                    tcspc_resolution=30e-12)
    np.save(tmp_path / "img.npy", counts90)
    ptu = read_recording(tmp_path / "img.ptu")
    assert ptu.bin_width_ns == pytest.approx(0.03) and ptu.counts.shape[:2] == (H, W)
    assert "PTU" in ptu.kind
    got, how = to_gates(ptu, 135, 0.09)
    assert "3 bin(s) of 0.03 ns summed" in how
    npy = read_recording(tmp_path / "img.npy")
    assert npy.bin_width_ns is None
    same, how = to_gates(npy, 135, 0.09)  # no bin width in the file: the model's gate
    assert how == "bins are the gates"
    np.testing.assert_array_equal(got, same)
    np.testing.assert_array_equal(got, counts90)


def test_every_reader_reads_the_same_counts(tmp_path, photons):
    import tifffile
    from scipy.io import savemat

    _, counts90 = photons
    np.savez(tmp_path / "a.npz", counts=counts90, bin_width_ns=0.09)
    tifffile.imwrite(tmp_path / "a.tif", np.moveaxis(counts90, -1, 0).astype(np.uint16))
    savemat(tmp_path / "a.mat", {"tp4d": counts90.astype(np.float64)})
    np.save(tmp_path / "pixels.npy", counts90.reshape(-1, 135))
    for name in ("a.npz", "a.tif", "a.mat"):
        rec = read_recording(tmp_path / name)
        np.testing.assert_array_equal(to_gates(rec, 135, 0.09)[0], counts90)
    rec = read_recording(tmp_path / "pixels.npy")
    assert rec.spatial_shape == (H * W,)


def test_rebinning_refuses_what_does_not_divide(photons):
    counts30, _ = photons
    rec = Recording(counts30, 0.04, "x.ptu", "test")
    with pytest.raises(RecordingError, match=r"x.ptu: its 0.04 ns bins do not divide the model's 0.09 ns gates"):
        to_gates(rec, 135, 0.09)
    with pytest.warns(UserWarning, match="resampled"):
        got, how = to_gates(rec, 100, 0.09, resample=True)  # 405 x 0.04 = 16.2 ns covers 9 ns
    assert got.shape == (H, W, 100) and how.startswith("resampled")
    # resampling moves photons between gates, never creates or loses them inside the window
    inside = counts30[..., :225].sum()  # 225 x 0.04 ns = the 9 ns window
    assert got.sum() == pytest.approx(inside)
    short = Recording(counts30[..., :300], 0.03, "short.ptu", "test")
    with pytest.raises(RecordingError, match=r"short.ptu: 300 bins of 0.03 ns \(9 ns\) are shorter than the model's "
                                             r"window of 135 gates x 0.09 ns \(12.15 ns\)"):
        to_gates(short, 135, 0.09)
    with pytest.raises(RecordingError, match="--bin-width 0.05: x.ptu says its bins are 0.04 ns"):
        to_gates(rec, 135, 0.09, bin_width_ns=0.05)


def test_preprocess_hand_worked():
    counts = np.array([[2, 4, 0, 10, 6, 2]], dtype=np.float64)
    # background: mean of the first 2 gates = 3; minus it, clipped: [0, 1, 0, 7, 3, 0]; / 7
    np.testing.assert_allclose(preprocess(counts, background=2), [[0, 1 / 7, 0, 1, 3 / 7, 0]], rtol=1e-6)
    np.testing.assert_allclose(preprocess(counts, background=0), [[0.2, 0.4, 0, 1, 0.6, 0.2]], rtol=1e-6)
    assert preprocess(np.ones((1, 6)), background=3).tolist() == [[0.0] * 6]  # flat: nothing above background
    assert preprocess(counts, 2).dtype == np.float32


def test_bad_recordings_are_refused_in_one_line(tmp_path, photons):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RecordingError, match=r"notes.txt: not a FLIM recording flimcc reads \(known: .ptu"):
        read_recording(tmp_path / "notes.txt")
    (tmp_path / "broken.ptu").write_bytes(b"PQTTTR\0\0" + bytes(range(200)))
    with pytest.raises(RecordingError, match=r"broken.ptu: cannot read it as PTU \(") as e:
        read_recording(tmp_path / "broken.ptu")
    assert "\n" not in str(e.value)
    np.save(tmp_path / "empty.npy", np.zeros((4, 4, 135), np.uint16))
    with pytest.raises(RecordingError, match="empty.npy: the recording holds no photons"):
        read_recording(tmp_path / "empty.npy")
    np.save(tmp_path / "flat.npy", np.ones(135))
    with pytest.raises(RecordingError, match=r"flat.npy: expected photon counts \(H, W, bins\) or \(N, bins\)"):
        read_recording(tmp_path / "flat.npy")
    with pytest.raises(RecordingError, match="missing.ptu: no such file"):
        read_recording(tmp_path / "missing.ptu")
