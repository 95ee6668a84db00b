"""The preprocessed-array cache and the training-array loader."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import pipeline.imaging.cache as cache_mod
from pipeline.errors import DataError
from pipeline.imaging.cache import PreprocessCache
from pipeline.imaging.images import load_training_images
from pipeline.imaging.preprocess import PreprocessSpec


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _img(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).random((1, size, size), dtype=np.float32)


def test_key_depends_on_content_and_spec(tmp_path):
    cache = PreprocessCache(tmp_path)
    spec = PreprocessSpec()
    k = cache.key(_sha("a"), spec)
    assert k == PreprocessCache(tmp_path / "other").key(_sha("a"), PreprocessSpec())
    assert k != cache.key(_sha("b"), spec)
    assert k != cache.key(_sha("a"), PreprocessSpec(image_size=32))
    assert len(k) == 64 and int(k, 16) >= 0


def test_put_get_round_trip_is_exact_and_sharded(tmp_path):
    cache = PreprocessCache(tmp_path)
    key = cache.key(_sha("a"), PreprocessSpec())
    assert cache.get(key) is None and key not in cache
    arr = _img(0)
    path = cache.put(key, arr)
    assert path == tmp_path / key[:2] / key[2:4] / f"{key}.npy"
    got = cache.get(key)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, arr)
    assert key in cache
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left over


def test_partial_file_is_never_read_as_valid(tmp_path):
    cache = PreprocessCache(tmp_path)
    key = cache.key(_sha("a"), PreprocessSpec())
    path = cache.put(key, _img(1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a torn write from some other process
    assert cache.get(key) is None
    assert not path.exists()  # removed, so the next ingest recomputes it


def test_failed_write_leaves_no_entry(tmp_path, monkeypatch):
    cache = PreprocessCache(tmp_path)
    key = cache.key(_sha("a"), PreprocessSpec())
    real_save = np.save

    def crash(f, arr, **kw):
        real_save(f, arr[..., :2], **kw)  # some bytes reach the temporary file
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.np, "save", crash)
    with pytest.raises(OSError):
        cache.put(key, _img(2))
    monkeypatch.undo()
    assert cache.get(key) is None
    assert list(tmp_path.rglob("*.tmp")) == [] and list(tmp_path.rglob("*.npy")) == []
    cache.put(key, _img(2))  # a later write succeeds
    np.testing.assert_array_equal(cache.get(key), _img(2))


def test_overwrite_replaces_whole_file(tmp_path):
    cache = PreprocessCache(tmp_path)
    key = cache.key(_sha("a"), PreprocessSpec())
    cache.put(key, _img(3))
    cache.put(key, _img(4))
    np.testing.assert_array_equal(cache.get(key), _img(4))


def test_bad_key_is_refused(tmp_path):
    with pytest.raises(ValueError, match="hex"):
        PreprocessCache(tmp_path).get("../../etc/passwd")


def test_load_training_images_into_memmap(tmp_path):
    cache = PreprocessCache(tmp_path / "cache")
    spec = PreprocessSpec(image_size=8)
    keys = [cache.key(_sha(str(i)), spec) for i in range(5)]
    for i, k in enumerate(keys):
        cache.put(k, _img(i))
    out_path = tmp_path / "train" / "images.npy"
    order = [keys[3], keys[0], keys[4]]
    arr = load_training_images(cache, order, out_path=out_path)
    assert isinstance(arr, np.memmap)
    assert arr.shape == (3, 1, 8, 8) and arr.dtype == np.float32
    reopened = np.load(out_path, mmap_mode="r")
    for row, i in enumerate((3, 0, 4)):
        np.testing.assert_array_equal(reopened[row], _img(i))
    in_memory = load_training_images(cache, order)
    assert not isinstance(in_memory, np.memmap)
    np.testing.assert_array_equal(in_memory, reopened)


def test_missing_keys_name_the_count_and_the_fix(tmp_path):
    cache = PreprocessCache(tmp_path)
    spec = PreprocessSpec(image_size=8)
    keys = [cache.key(_sha(str(i)), spec) for i in range(5)]
    for k in keys[:3]:
        cache.put(k, _img(0))
    with pytest.raises(DataError) as err:
        load_training_images(cache, keys)
    assert "2 of 5" in str(err.value) and "cmcl ingest" in str(err.value)
    with pytest.raises(DataError, match="empty"):
        load_training_images(cache, [])


def test_mixed_shapes_are_refused(tmp_path):
    cache = PreprocessCache(tmp_path)
    a, b = cache.key(_sha("a"), PreprocessSpec()), cache.key(_sha("b"), PreprocessSpec())
    cache.put(a, _img(0, size=8))
    cache.put(b, _img(0, size=16))
    with pytest.raises(DataError, match="image_size"):
        load_training_images(cache, [a, b])
