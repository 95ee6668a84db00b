"""MR series -> 2D: slice ordering, middle slice, MIP, fallbacks, SimpleITK cross-check."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813 - the conventional alias

from pipeline.imaging.display import UnsupportedImageError
from pipeline.imaging.mri import preprocess_series, series_volume, slice_order
from pipeline.imaging.preprocess import PreprocessSpec, preprocess_dataset
from pipeline.synthetic.writer import UIDs, make_dataset, synthetic_pixels, write_dataset

N = 12
SPEC = PreprocessSpec(image_size=16)


def _slices(n: int = N, rows: int = 24, columns: int = 20) -> list[np.ndarray]:
    """Distinct slices: slice k (in acquisition order) has a bright bar at row 2k."""
    out = []
    for k in range(n):
        arr = synthetic_pixels(rows, columns, seed=k)
        arr[2 * k % rows, :] = 4000
        out.append(arr)
    return out


def _series(tmp_path: Path, arrays, *, oblique: bool = False) -> list[Path]:
    """Write slice k at position 5 - 2.5 k along the normal with InstanceNumber k + 1, i.e.
    numbered against the geometry (only a position sort gets the order right), files in
    shuffled order."""
    uids = UIDs()
    paths = []
    order = list(range(len(arrays)))
    random.Random(0).shuffle(order)
    for k in order:
        ds = make_dataset(
            modality="MR",
            pixels=arrays[k],
            uids=UIDs(series=uids.series, study=uids.study),
            instance_number=k + 1,
            slice_position=0.0,
        )
        if oblique:  # sagittal: rows along y, columns along -z; normal = (-1, 0, 0)
            ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
            ds.ImagePositionPatient = [2.5 * k - 5.0, 10.0, 3.0]  # along the normal: 5 - 2.5k
        else:  # axial: normal = (0, 0, 1)
            ds.ImagePositionPatient = [-3.0, 7.0, 5.0 - 2.5 * k]
        paths.append(write_dataset(tmp_path / f"file{len(paths):02d}.dcm", ds))
    return paths


def _read(paths):
    return [pydicom.dcmread(p) for p in paths]


@pytest.mark.parametrize("oblique", [False, True])
def test_middle_slice_of_a_shuffled_series(tmp_path, oblique):
    arrays = _slices()
    paths = _series(tmp_path, arrays, oblique=oblique)
    # ascending along the normal is acquisition order N-1, ..., 0; its middle (index 6) is k=5
    volume = series_volume(_read(paths))  # [12, 24, 20]
    np.testing.assert_array_equal(volume, np.stack(arrays[::-1]).astype(np.float32))
    out = preprocess_series(paths, SPEC)
    expected = preprocess_dataset(make_dataset(modality="MR", pixels=arrays[5]), SPEC)
    np.testing.assert_array_equal(out, expected)
    for other in (4, 6):
        wrong = preprocess_dataset(make_dataset(modality="MR", pixels=arrays[other]), SPEC)
        assert np.abs(out - wrong).max() > 0.05
    np.testing.assert_array_equal(preprocess_series(_read(paths), SPEC), out)  # datasets too


def test_mip(tmp_path):
    arrays = _slices()
    paths = _series(tmp_path, arrays)
    spec = PreprocessSpec(image_size=16, mri_reduction="mip")
    out = preprocess_series(paths, spec)
    mip = np.max(np.stack(arrays), axis=0)  # [24, 20]: every slice's bar
    expected = preprocess_dataset(make_dataset(modality="MR", pixels=mip), spec)
    np.testing.assert_array_equal(out, expected)
    assert out.shape == (1, 16, 16) and out.dtype == np.float32


def test_order_agrees_with_simpleitk(tmp_path):
    arrays = _slices(n=6)
    paths = _series(tmp_path, arrays, oblique=True)
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(names))  # [6, 24, 20], GDCM's order
    np.testing.assert_array_equal(series_volume(_read(paths)), reference.astype(np.float32))


def test_fallback_to_instance_number(tmp_path):
    arrays = _slices(n=5)
    dss = _read(_series(tmp_path, arrays))
    for ds in dss:
        del ds.ImagePositionPatient
    order = slice_order(dss)
    assert [int(dss[i].InstanceNumber) for i in order] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(series_volume(dss), np.stack(arrays).astype(np.float32))


def test_inconsistent_and_empty_series(tmp_path):
    dss = [make_dataset(modality="MR", rows=16, columns=16, slice_position=z) for z in (0, 1)]
    dss.append(make_dataset(modality="MR", rows=8, columns=16, slice_position=2))
    with pytest.raises(UnsupportedImageError) as err:
        preprocess_series(dss, SPEC)
    assert err.value.reason == "inconsistent_series"
    with pytest.raises(UnsupportedImageError):
        preprocess_series([], SPEC)


def test_series_window_from_middle_slice():
    arrays = _slices(n=3, rows=16, columns=16)
    dss = []
    for k, arr in enumerate(arrays):
        ds = make_dataset(modality="MR", pixels=arr, slice_position=float(k))
        ds.WindowCenter, ds.WindowWidth = 1000 + 500 * k, 800  # the middle's is 1500
        dss.append(ds)
    out = preprocess_series(dss, SPEC)
    one = make_dataset(modality="MR", pixels=arrays[1])
    one.WindowCenter, one.WindowWidth = 1500, 800
    np.testing.assert_array_equal(out, preprocess_dataset(one, SPEC))
