"""Preprocessing: MONOCHROME1, VOI windowing, rescale, orientation, shape/range, parity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing
from pydicom.sequence import Sequence

import pipeline.imaging.preprocess as pp
from pipeline.imaging.display import UnsupportedImageError
from pipeline.imaging.preprocess import (
    PreprocessSpec,
    decode_modality,
    preprocess_dataset,
    preprocess_file,
)
from pipeline.synthetic.writer import make_dataset, synthetic_pixels, write_dataset

TOP = 4095  # 12-bit stored values


def _ds(pixels: np.ndarray, photometric: str = "MONOCHROME2", **tags) -> Dataset:
    ds = make_dataset(modality="CR", pixels=pixels, photometric=photometric, bits_stored=12)
    for name, value in tags.items():
        setattr(ds, name, value)
    return ds


def _reread(ds: Dataset, tmp_path, name: str = "x.dcm") -> tuple[Dataset, object]:
    path = write_dataset(tmp_path / name, ds)
    return pydicom.dcmread(path), path


@pytest.fixture
def pixels() -> np.ndarray:
    return synthetic_pixels(96, 80, bits_stored=12, seed=3)  # [96, 80] uint16


@pytest.mark.parametrize("shape", [(512, 512), (256, 200), (40, 30), (64, 64)])
def test_output_shape_dtype_range(shape):
    ds = _ds(synthetic_pixels(*shape, seed=1))
    out = preprocess_dataset(ds, PreprocessSpec(image_size=64))
    assert out.shape == (1, 64, 64)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() - out.min() > 0.5  # a real image, not a constant


def test_monochrome1_twin_gives_the_same_array(pixels, tmp_path):
    spec = PreprocessSpec(image_size=32)
    mono2 = preprocess_dataset(_ds(pixels), spec)
    mono1 = preprocess_dataset(_ds((TOP - pixels).astype(np.uint16), "MONOCHROME1"), spec)
    np.testing.assert_allclose(mono1, mono2, atol=1e-6)
    assert np.abs(mono2 - (1 - mono2)).max() > 0.5  # inversion is not a no-op here
    # the MONAI LoadImage path agrees
    _, p1 = _reread(_ds((TOP - pixels).astype(np.uint16), "MONOCHROME1"), tmp_path, "m1.dcm")
    np.testing.assert_allclose(preprocess_file(p1, spec), mono2, atol=1e-6)


def test_monochrome1_twin_with_window(pixels):
    spec = PreprocessSpec(image_size=32)
    # LINEAR (PS3.3 C.11.2.1.2) spans [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2]; mirrored by
    # x -> 4095 - x that is the window of centre 4096 - c.
    mono2 = preprocess_dataset(_ds(pixels, WindowCenter=1500, WindowWidth=1200), spec)
    twin = _ds((TOP - pixels).astype(np.uint16), "MONOCHROME1", WindowCenter=4096 - 1500)
    twin.WindowWidth = 1200
    np.testing.assert_allclose(preprocess_dataset(twin, spec), mono2, atol=1e-6)
    assert (mono2 == 0).any() and (mono2 == 1).any()  # the window clipped both ends


def _reference(ds: Dataset, index: int = 0) -> np.ndarray:
    """pydicom's own modality LUT + windowing, normalised to [0, 1] by its output range."""
    raw = ds.pixel_array
    y = apply_windowing(apply_modality_lut(raw, ds), ds, index=index)
    slope, icpt = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    lo, hi = 0 * slope + icpt, TOP * slope + icpt
    return ((y - lo) / (hi - lo)).astype(np.float32)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_matches_pydicom(pixels, function):
    ds = _ds(pixels, WindowCenter=1800, WindowWidth=900, VOILUTFunction=function)
    out = preprocess_dataset(ds, PreprocessSpec(image_size=96, keep_aspect=False))
    ref = _reference(ds)  # [96, 80]; resize to 96x96 bilinear as the spec asks
    ref = F.interpolate(torch.from_numpy(ref)[None, None], size=(96, 96), mode="bilinear")
    np.testing.assert_allclose(out[0], ref[0, 0].numpy(), atol=2e-6)


def test_multi_valued_window_uses_the_first(pixels):
    ds = _ds(pixels)
    ds.WindowCenter, ds.WindowWidth = [1200, 3000], [800, 400]
    square = pixels[:80, :80]
    ds = _ds(square)
    ds.WindowCenter, ds.WindowWidth = [1200, 3000], [800, 400]
    out = preprocess_dataset(ds, PreprocessSpec(image_size=80))
    np.testing.assert_allclose(out[0], _reference(ds, index=0), atol=1e-6)
    assert np.abs(out[0] - _reference(ds, index=1)).max() > 0.1


def test_rescale_applied_exactly_once(pixels):
    square = pixels[:80, :80]
    # window given in rescaled units; applying slope/intercept twice would miss it entirely
    ds = _ds(square, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=2000, WindowWidth=1500)
    out = preprocess_dataset(ds, PreprocessSpec(image_size=80))
    np.testing.assert_allclose(out[0], _reference(ds), atol=1e-6)
    modality = decode_modality(ds)
    np.testing.assert_array_equal(modality, square.astype(np.float32) * 2 - 1024)


def test_modality_lut_sequence(pixels, tmp_path):
    ds = _ds(pixels)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor: entries, first, bits
    item.add_new(0x00283006, "US", [2 * v + 100 for v in range(4096)])  # LUT Data
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = Sequence([item])
    np.testing.assert_array_equal(decode_modality(ds), 2 * pixels.astype(np.float32) + 100)
    ds.WindowCenter, ds.WindowWidth = 4000, 3000  # in LUT output units
    spec = PreprocessSpec(image_size=32)
    out = preprocess_dataset(ds, spec)
    without_lut = _ds(pixels, WindowCenter=4000, WindowWidth=3000)
    assert np.abs(out - preprocess_dataset(without_lut, spec)).max() > 0.1
    np.testing.assert_allclose(preprocess_file(_reread(ds, tmp_path)[1], spec), out, atol=1e-6)


@pytest.mark.parametrize("declared_bits", [12, 16])  # 16 declared over 12-bit data happens
def test_voi_lut_sequence(pixels, declared_bits):
    square = pixels[:80, :80]
    ds = _ds(square, WindowCenter=100, WindowWidth=10)  # the LUT takes precedence
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, declared_bits])  # LUT Descriptor: entries, first, bits
    lut = np.sqrt(np.arange(4096) / 4095) * 4095
    item.add_new(0x00283006, "US", [int(v) for v in lut])  # LUT Data
    ds.VOILUTSequence = Sequence([item])
    out = preprocess_dataset(ds, PreprocessSpec(image_size=80))
    ref = apply_voi(square, ds).astype(np.float32) / TOP
    np.testing.assert_allclose(out[0], ref, atol=1e-6)


def test_no_window_uses_robust_percentiles(pixels):
    hot = pixels.copy()
    hot[0, 0] = TOP  # one outlier pixel must not set the scale
    out = preprocess_dataset(_ds(hot), PreprocessSpec(image_size=96, keep_aspect=False))
    assert out.max() == pytest.approx(1.0) and out.min() == pytest.approx(0.0)
    assert np.mean(out) > 0.2  # not squashed towards 0 by the outlier


def test_malformed_window_falls_back_to_percentiles(pixels):
    spec = PreprocessSpec(image_size=32)
    plain = preprocess_dataset(_ds(pixels), spec)
    bad = _ds(pixels, WindowWidth=500)
    bad.WindowCenter = ""  # present but empty
    np.testing.assert_array_equal(preprocess_dataset(bad, spec), plain)
    no_voi = PreprocessSpec(image_size=32, apply_voi=False)
    windowed = _ds(pixels, WindowCenter=1000, WindowWidth=200)
    np.testing.assert_array_equal(preprocess_dataset(windowed, no_voi), plain)


def test_orientation_of_a_non_square_image(tmp_path):
    arr = np.full((256, 200), 500, dtype=np.uint16)  # rows x columns
    arr[:64, 150:] = TOP  # bright block at the top right (a transpose puts it bottom left)
    ds = _ds(arr, WindowCenter=2048, WindowWidth=4096)  # full range: background ~0.12
    np.testing.assert_array_equal(decode_modality(ds), arr.astype(np.float32))  # not transposed
    spec = PreprocessSpec(image_size=64)
    for out in (preprocess_dataset(ds, spec), preprocess_file(_reread(ds, tmp_path)[1], spec)):
        # 256 x 200 -> 64 x 50, padded with 7 black columns at the left and 7 at the right
        assert (out[0, :, :7] == 0).all() and (out[0, :, 57:] == 0).all()
        content = out[0, :, 7:57]  # [64, 50]
        assert (content > 0.1).all()
        assert content[:16, 38:].min() > 0.99  # top right: the bright block
        assert content[16:, :].max() < 0.2 and content[:, :37].max() < 0.2


def test_stretch_without_keep_aspect():
    arr = np.zeros((256, 200), dtype=np.uint16)
    arr[:, :100] = TOP
    out = preprocess_dataset(_ds(arr), PreprocessSpec(image_size=64, keep_aspect=False))
    assert (out[0, :, :32] > 0.99).all() and (out[0, :, 32:] < 0.01).all()


@pytest.mark.parametrize(
    "kwargs, spec",
    [
        ({"rows": 256, "columns": 200}, PreprocessSpec(image_size=64)),
        ({"rows": 40, "columns": 30}, PreprocessSpec(image_size=64)),
        ({"rows": 70, "columns": 90}, PreprocessSpec(image_size=32, keep_aspect=False)),
        ({"rows": 64, "columns": 48, "photometric": "MONOCHROME1"}, PreprocessSpec(32)),
        ({"rows": 32, "columns": 32, "frames": 3, "modality": "MR"}, PreprocessSpec(16)),
        ({"rows": 32, "columns": 32, "frames": 3, "modality": "DX"}, PreprocessSpec(16)),
    ],
)
def test_fast_path_equals_monai_pipeline(tmp_path, kwargs, spec):
    ds = make_dataset(**kwargs)
    ds.WindowCenter, ds.WindowWidth = 1400, 2000
    read, path = _reread(ds, tmp_path)
    np.testing.assert_allclose(
        preprocess_dataset(read, spec), preprocess_file(path, spec), rtol=0, atol=1e-6
    )


def test_multi_frame(tmp_path):
    frames = synthetic_pixels(32, 32, frames=3, seed=5)  # [3, 32, 32]
    spec = PreprocessSpec(image_size=32, mri_reduction="middle")
    dx = make_dataset(modality="DX", pixels=frames)
    np.testing.assert_array_equal(
        preprocess_dataset(dx, spec), preprocess_dataset(make_dataset(pixels=frames[0]), spec)
    )
    mr = make_dataset(modality="MR", pixels=frames)
    one = make_dataset(modality="MR", pixels=frames[1])
    np.testing.assert_array_equal(preprocess_dataset(mr, spec), preprocess_dataset(one, spec))
    mip = make_dataset(modality="MR", pixels=frames.max(axis=0))
    spec_mip = dataclasses.replace(spec, mri_reduction="mip")
    np.testing.assert_array_equal(preprocess_dataset(mr, spec_mip), preprocess_dataset(mip, spec))


def test_enhanced_multi_frame_mr_uses_plane_positions(tmp_path):
    frames = synthetic_pixels(24, 24, frames=5, seed=9)  # [5, 24, 24], stored order
    z = [3.0, -1.0, 7.0, 1.0, 5.0]  # along the normal: sorted order 1, 3, 0, 4, 2
    mr = make_dataset(modality="MR", pixels=frames)
    shared = Dataset()
    shared.PlaneOrientationSequence = Sequence([Dataset()])
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    mr.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for zi in z:
        group, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = [0.0, 0.0, zi]
        group.PlanePositionSequence = Sequence([plane])
        per_frame.append(group)
    mr.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    spec = PreprocessSpec(image_size=24)
    out = preprocess_dataset(mr, spec)
    middle = preprocess_dataset(make_dataset(modality="MR", pixels=frames[0]), spec)
    np.testing.assert_array_equal(out, middle)  # position median (z=3), not stored frame 2
    assert np.abs(out - preprocess_dataset(make_dataset(pixels=frames[2]), spec)).max() > 0.05
    read, path = _reread(mr, tmp_path)
    np.testing.assert_allclose(preprocess_file(path, spec), out, rtol=0, atol=1e-6)


def test_colour_and_missing_pixels_are_refused():
    with pytest.raises(UnsupportedImageError) as err:
        preprocess_dataset(make_dataset(photometric="RGB"), PreprocessSpec())
    assert err.value.reason == "unsupported_photometric"
    ds = make_dataset()
    del ds.PixelData
    with pytest.raises(UnsupportedImageError) as err:
        preprocess_dataset(ds, PreprocessSpec())
    assert err.value.reason == "no_pixel_data"


def test_constant_image_and_cached_pixels_untouched():
    ds = _ds(np.full((32, 32), 700, dtype=np.uint16))
    before = ds.pixel_array.copy()
    out = preprocess_dataset(ds, PreprocessSpec(image_size=16))
    assert (out == 0).all()
    np.testing.assert_array_equal(ds.pixel_array, before)
    float_ds = _ds(synthetic_pixels(32, 32), RescaleSlope=0.5, RescaleIntercept=3)
    cached = float_ds.pixel_array.copy()
    preprocess_dataset(float_ds, PreprocessSpec(image_size=16))
    np.testing.assert_array_equal(float_ds.pixel_array, cached)


def test_fingerprint_tracks_every_field_and_the_version(monkeypatch):
    base = PreprocessSpec()
    assert base.fingerprint() == PreprocessSpec().fingerprint()
    changed = [
        dataclasses.replace(base, image_size=32),
        dataclasses.replace(base, mri_reduction="mip"),
        dataclasses.replace(base, keep_aspect=False),
        dataclasses.replace(base, percentiles=(1.0, 99.0)),
        dataclasses.replace(base, apply_voi=False),
    ]
    assert {f.name for f in dataclasses.fields(PreprocessSpec)} == {
        "image_size",
        "mri_reduction",
        "keep_aspect",
        "percentiles",
        "apply_voi",
    }  # a new field must be added to the list above
    prints = {s.fingerprint() for s in changed} | {base.fingerprint()}
    assert len(prints) == len(changed) + 1
    before = base.fingerprint()
    monkeypatch.setattr(pp, "PREPROCESS_VERSION", pp.PREPROCESS_VERSION + "-next")
    assert PreprocessSpec().fingerprint() != before


def test_spec_validation_and_config():
    with pytest.raises(ValueError, match="mri_reduction"):
        PreprocessSpec(mri_reduction="mean")
    with pytest.raises(ValueError, match="percentiles"):
        PreprocessSpec(percentiles=(50.0, 10.0))
    from pipeline.config import DicomConfig

    spec = PreprocessSpec.from_config(DicomConfig(source=".", image_size=32, mri_reduction="mip"))
    assert (spec.image_size, spec.mri_reduction) == (32, "mip")


@pytest.mark.slow
def test_pydicom_corpus_preprocesses_or_is_refused():
    """Every decodable image in pydicom's shipped test files gives a valid [1, S, S] array
    in [0, 1] or an UnsupportedImageError with a reason code; nothing else escapes."""
    import os
    import warnings

    from pydicom.data import get_testdata_file

    folder = Path(get_testdata_file("CT_small.dcm")).parent
    spec = PreprocessSpec(image_size=32)
    outcomes = {"ok": 0, "refused": 0}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
                ds.pixel_array  # noqa: B018 - only decodable images are this test's subject
        except Exception:  # noqa: BLE001 - undecodable files are the ingest's quarantine
            continue
        try:
            out = preprocess_dataset(ds, spec)
        except UnsupportedImageError as err:
            assert err.reason in {"unsupported_photometric", "unsupported_modality"}, path.name
            outcomes["refused"] += 1
            continue
        assert out.shape == (1, 32, 32) and out.dtype == np.float32, os.fspath(path.name)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, path.name
        outcomes["ok"] += 1
    assert outcomes["ok"] >= 40 and outcomes["refused"] >= 1


@pytest.mark.parametrize(
    "tags",
    [
        {},
        {"RescaleSlope": 2, "RescaleIntercept": -1024},
        {"RescaleSlope": 0.37},
        {"RescaleIntercept": 100},
        {"PhotometricInterpretation": "MONOCHROME1", "RescaleSlope": 1.5},
    ],
)
@pytest.mark.parametrize("frames", [1, 3])
def test_decoded_pixels_give_what_monais_reader_gives(tags, frames, tmp_path):
    """Ingest hands validation's decoded pixels to the preprocessing; the rescale it then does
    itself equals MONAI's PydicomReader bit for bit, and so does the whole preprocessing."""
    ds = make_dataset(modality="DX", rows=96, columns=80, frames=frames, seed=frames)
    for name, value in tags.items():
        setattr(ds, name, value)
    ds = _reread(ds, tmp_path)[0]
    pixels = pydicom.dcmread(tmp_path / "x.dcm").pixel_array
    via_reader = decode_modality(ds)
    given = decode_modality(ds, pixels)
    assert given.dtype == via_reader.dtype == np.float32
    np.testing.assert_array_equal(given, via_reader)
    assert not np.shares_memory(given, pixels)  # the caller's array is never modified
    spec = PreprocessSpec(image_size=32)
    out = preprocess_dataset(ds, spec, pixels)
    np.testing.assert_array_equal(out, preprocess_dataset(ds, spec))


@pytest.mark.parametrize("percentiles", [(0.5, 99.5), (0.0, 100.0), (1.0, 99.0), (25.0, 75.0)])
@pytest.mark.parametrize("shape", [(1, 256, 256), (1, 40, 30), (1, 1, 1), (1, 512, 384)])
def test_percentiles_equal_numpys_over_the_sample(percentiles, shape):
    """The partitioned sample gives the interpolation over the fully sorted sample (and so
    np.percentile's linear method, to rounding), to the last bit."""
    from pipeline.imaging.display import _PERCENTILE_SAMPLE, _percentile_range

    rng = np.random.default_rng(sum(shape))
    x = rng.integers(0, 4096, shape).astype(np.float32)
    x[..., ::7, ::5] = 4095  # ties
    stride = max(1, int(np.ceil(np.sqrt(x.size / _PERCENTILE_SAMPLE))))
    ordered = np.sort(x[..., ::stride, ::stride], axis=None)  # [k]
    ranks = np.asarray(percentiles) / 100.0 * (ordered.size - 1)
    want = np.interp(ranks, np.arange(ordered.size), ordered)
    assert _percentile_range(x, percentiles) == (float(want[0]), float(want[1]))
    np.testing.assert_allclose(want, np.percentile(x[..., ::stride, ::stride], percentiles))


@pytest.mark.parametrize(
    ("hw", "size"), [((256, 256), 64), ((192, 96), 64), ((128, 128), 64), ((300, 300), 100)]
)
def test_whole_factor_shrink_equals_torch_area(hw, size):
    """The block mean used for small whole factors gives torch's "area" resize bit for bit."""
    rng = np.random.default_rng(hw[0])
    for x in (
        rng.integers(0, 4096, (1, *hw)).astype(np.float32),
        (rng.standard_normal((1, *hw)) * 1e3).astype(np.float32),
    ):
        out = pp.resize_pad(x, PreprocessSpec(image_size=size), pad=False)
        h, w = pp.target_size(*hw, PreprocessSpec(image_size=size))
        ref = F.interpolate(torch.from_numpy(x)[None], size=(h, w), mode="area")[0].numpy()
        np.testing.assert_array_equal(out, ref)
