"""The decode cache: unchanged sound files are not decoded again; damage is still found."""
import json
import os
import time
from pathlib import Path

import pytest

import datasets.decode_cache as decode_cache
import datasets.pixel_check as pixel_check
from _datasets_helpers import write_pairs
from datasets import DecodeCache, check_splits, discover_dataset
from datasets.pixel_check import find_damaged
from test_datasets_robustness import damage_pixel_data


@pytest.fixture
def files(tmp_path):
    root = tmp_path / "set"
    write_pairs(root / "Image", root / "GT", [f"s{i}" for i in range(4)], size=(64, 64))
    return sorted(root.rglob("*.*"))


@pytest.fixture
def decoded(monkeypatch):
    """Every path handed to the decoder, in order."""
    seen = []
    real = pixel_check.check_decodes

    def spy(paths):
        seen.extend(Path(p) for p in paths)
        return real(paths)

    monkeypatch.setattr(pixel_check, "check_decodes", spy)
    return seen


@pytest.fixture
def no_racy_window(monkeypatch):
    # Files written by the test are seconds old at most; record them anyway.
    monkeypatch.setattr(decode_cache, "RACY_S", -1.0)


def test_unchanged_sound_files_are_not_decoded_again(tmp_path, files, decoded, no_racy_window):
    store = tmp_path / "cache" / "decode_check.json"
    assert find_damaged(files, workers=0, cache=DecodeCache(store)) == {}
    assert sorted(decoded) == files
    assert len(json.loads(store.read_text())["files"]) == len(files)
    decoded.clear()
    progress = []
    assert find_damaged(files, workers=0, cache=DecodeCache(store), progress=progress.append) == {}
    assert decoded == [] and sum(progress) == len(files)


def test_damage_after_a_clean_run_is_still_found(tmp_path, files, decoded, no_racy_window):
    store = tmp_path / "decode_check.json"
    find_damaged(files, workers=0, cache=DecodeCache(store))
    target = next(p for p in files if p.suffix == ".jpg")
    stat = target.stat()
    damage_pixel_data(target)  # same size; the rewrite changes its times
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime restored
    decoded.clear()
    for _ in range(2):  # a damaged file is never recorded: found on every run
        found = find_damaged(files, workers=0, cache=DecodeCache(store))
        assert list(found) == [target] and "damaged" in found[target]
    assert decoded == [target, target]


def test_recently_modified_files_are_checked_but_not_recorded(tmp_path, files, decoded):
    store = tmp_path / "decode_check.json"
    find_damaged(files, workers=0, cache=DecodeCache(store))
    assert not store.exists()  # all files are younger than RACY_S: nothing recorded
    old = time.time() - 10 * decode_cache.RACY_S
    for p in files:
        os.utime(p, (old, old))
    # ctime is still new (utime sets it to now), so they are still racy
    find_damaged(files, workers=0, cache=DecodeCache(store))
    assert not store.exists()
    assert len(decoded) == 2 * len(files)


def test_damaged_or_missing_cache_file_and_off_switch(tmp_path, files, decoded, no_racy_window, monkeypatch):
    store = tmp_path / "decode_check.json"
    store.write_text("{not json")
    assert find_damaged(files, workers=0, cache=DecodeCache(store)) == {}
    assert len(json.loads(store.read_text())["files"]) == len(files)
    monkeypatch.setenv("CAMOXPERT_CACHE", str(tmp_path / "home"))
    assert DecodeCache.default().path == tmp_path / "home" / "decode_check.json"
    monkeypatch.setenv("CAMOXPERT_DECODE_CACHE", "0")
    off = DecodeCache.default()
    assert off.path is None
    decoded.clear()
    find_damaged(files, workers=0, cache=off)
    assert sorted(decoded) == files


def test_check_splits_uses_the_cache(tmp_path, decoded, no_racy_window):
    root = tmp_path / "set"
    write_pairs(root / "Image", root / "GT", [f"s{i}" for i in range(4)], size=(64, 64))
    splits = discover_dataset(root)
    store = tmp_path / "decode_check.json"
    check_splits(splits, part="train", decode=True, decode_cache=DecodeCache(store))
    assert len(decoded) == 8
    check_splits(splits, part="train", decode=True, decode_cache=DecodeCache(store))
    assert len(decoded) == 8
    damage_pixel_data(root / "GT" / "s3.png")
    with pytest.raises(Exception, match="s3.png"):
        check_splits(splits, part="train", decode=True, decode_cache=DecodeCache(store))
    assert decoded[8:] == [root / "GT" / "s3.png"]
