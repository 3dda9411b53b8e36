"""medscope.data: the official files, verified, loaded once as uint8 tensors."""
import io
import re
import urllib.error

import numpy as np
import pytest
import torch

from medscope import data
from medscope.errors import UsageError
from tests.conftest import write_fake_medmnist


def test_dataset_info_comes_from_the_medmnist_package():
    from medmnist.info import INFO

    info = data.dataset_info("breastmnist")
    assert info.task == INFO["breastmnist"]["task"] == data.TASK_BINARY
    assert info.md5 == INFO["breastmnist"]["MD5"] and info.url == INFO["breastmnist"]["url"]
    assert data.dataset_info("breastmnist", 64).md5 == INFO["breastmnist"]["MD5_64"]
    assert data.dataset_info("breastmnist", 64).file_name == "breastmnist_64.npz"
    assert len(data.dataset_flags()) == 18
    assert data.dataset_info("chestmnist").task == data.TASK_MULTILABEL
    assert data.dataset_info("retinamnist").task == data.TASK_ORDINAL
    assert data.dataset_info("adrenalmnist3d").spatial_dims == 3


@pytest.mark.parametrize("flag,size", [("nosuchmnist", 28), ("breastmnist", 32), ("adrenalmnist3d", 128)])
def test_unknown_dataset_or_size_is_bad_input(flag, size):
    with pytest.raises(UsageError):
        data.dataset_info(flag, size)


def test_real_2d_file_loads_as_channels_first_uint8(medmnist_dir):
    info = data.dataset_info("breastmnist")
    splits = data.load_dataset(info, medmnist_dir)
    for name, split in splits.items():
        assert split.images.dtype == torch.uint8
        assert tuple(split.images.shape) == (info.n_samples[name], 1, 28, 28)
        assert tuple(split.labels.shape) == (info.n_samples[name], 1)
    raw = np.load(medmnist_dir / "breastmnist.npz")
    assert np.array_equal(splits["test"].images[:, 0].numpy(), raw["test_images"])


def test_real_3d_file_loads_as_volumes(medmnist_dir):
    info = data.dataset_info("adrenalmnist3d", 64)
    split = data.load_split(info, medmnist_dir, "val")
    assert tuple(split.images.shape) == (98, 1, 64, 64, 64)


def test_memory_mapped_split_equals_the_in_memory_one(medmnist_dir):
    info = data.dataset_info("pneumoniamnist")
    in_ram = data.load_split(info, medmnist_dir, "val", mmap=False)
    mapped = data.load_split(info, medmnist_dir, "val", mmap=True)
    assert mapped.memmapped and not in_ram.memmapped
    assert torch.equal(mapped.images, in_ram.images) and torch.equal(mapped.labels, in_ram.labels)
    index = torch.tensor([7, 3, 500, 0])
    a, la = data.gather(mapped, index, torch.device("cpu"))
    b, lb = data.gather(in_ram, index, torch.device("cpu"))
    assert torch.equal(a, b) and torch.equal(la, lb)


def test_wrong_md5_is_refused(medmnist_dir, tmp_path):
    target = tmp_path / "breastmnist.npz"
    raw = bytearray((medmnist_dir / "breastmnist.npz").read_bytes())
    raw[-100] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(UsageError, match="MD5"):
        data.load_dataset(data.dataset_info("breastmnist"), tmp_path)


def test_truncated_file_is_refused_even_without_md5_check(medmnist_dir, tmp_path):
    target = tmp_path / "breastmnist.npz"
    target.write_bytes((medmnist_dir / "breastmnist.npz").read_bytes()[:50_000])
    with pytest.raises(UsageError, match="MD5"):
        data.load_dataset(data.dataset_info("breastmnist"), tmp_path)
    with pytest.raises(UsageError, match="not a readable"):
        data.load_dataset(data.dataset_info("breastmnist"), tmp_path, check_md5=False)


def test_file_without_the_expected_arrays_is_refused(tmp_path):
    np.savez_compressed(tmp_path / "breastmnist.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UsageError, match="lacks the arrays"):
        data.load_dataset(data.dataset_info("breastmnist"), tmp_path, check_md5=False)


def test_missing_file_offline_names_path_and_url(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    info = data.dataset_info("breastmnist")
    with pytest.raises(UsageError) as excinfo:
        data.load_dataset(info, tmp_path)
    message = str(excinfo.value)
    assert str(tmp_path / "breastmnist.npz") in message and info.url in message
    assert not (tmp_path / "breastmnist.npz").exists()


def test_missing_file_is_downloaded_and_checked(medmnist_dir, tmp_path, monkeypatch):
    payload = (medmnist_dir / "breastmnist.npz").read_bytes()
    requested = []

    def fake_urlopen(url, timeout):
        requested.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    info = data.dataset_info("breastmnist")
    splits = data.load_dataset(info, tmp_path / "fresh")
    assert requested == [info.url]
    assert (tmp_path / "fresh" / "breastmnist.npz").read_bytes() == payload
    assert len(splits["train"]) == 546


def test_corrupt_download_is_refused_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"not a zip"))
    with pytest.raises(UsageError, match="MD5"):
        data.load_dataset(data.dataset_info("breastmnist"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_rgb_images_become_channels_first(tmp_path):
    write_fake_medmnist(tmp_path / "pathmnist.npz", n_channels=3, size=28, n_labels=9)
    split = data.load_split(data.dataset_info("pathmnist"), tmp_path, "train", check_md5=False)
    raw = np.load(tmp_path / "pathmnist.npz")["train_images"]
    assert tuple(split.images.shape) == (96, 3, 28, 28)
    assert np.array_equal(split.images.permute(0, 2, 3, 1).numpy(), raw)


def test_multilabel_labels_are_float_matrices(tmp_path):
    write_fake_medmnist(tmp_path / "chestmnist.npz", n_channels=1, size=28, n_labels=14, multilabel=True)
    split = data.load_split(data.dataset_info("chestmnist"), tmp_path, "val", check_md5=False)
    assert split.labels.dtype == torch.float32 and tuple(split.labels.shape) == (32, 14)


def test_labels_outside_the_dataset_are_refused(tmp_path):
    write_fake_medmnist(tmp_path / "breastmnist.npz", n_channels=1, size=28, n_labels=3)
    with pytest.raises(UsageError, match="outside"):
        data.load_split(data.dataset_info("breastmnist"), tmp_path, "train", check_md5=False)


def test_normalize_maps_uint8_to_minus_one_one():
    x = torch.tensor([0, 255, 51], dtype=torch.uint8)
    assert torch.allclose(data.normalize(x), torch.tensor([-1.0, 1.0, -0.6]))


def test_subset_is_seeded_and_sorted(medmnist_dir):
    split = data.load_split(data.dataset_info("breastmnist"), medmnist_dir, "train")
    a, b = data.subset(split, 100, seed=3), data.subset(split, 100, seed=3)
    assert len(a) == 100 and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, data.subset(split, 100, seed=4).images)


def test_batches_cover_every_index_once():
    split = data.Split(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.zeros(10, 1, dtype=torch.long))
    seen = torch.cat(list(data.batches(split, 3, shuffle=True, generator=torch.Generator().manual_seed(0))))
    assert sorted(seen.tolist()) == list(range(10))
    assert [len(b) for b in data.batches(split, 3, drop_last=True)] == [3, 3, 3]


def test_background_loading_reads_the_same_batches_in_the_same_order(medmnist_dir):
    split = data.load_split(data.dataset_info("pneumoniamnist"), medmnist_dir, "val", mmap=True)
    wanted = [torch.tensor([500, 3, 7]), torch.tensor([0]), torch.tensor([42, 41, 40, 1])]
    cpu = torch.device("cpu")
    direct = list(data.load_batches(split, wanted, cpu))
    ahead = list(data.load_batches(split, wanted, cpu, workers=2))
    assert len(ahead) == 3
    for (images, labels), (images_bg, labels_bg), index in zip(direct, ahead, wanted):
        assert torch.equal(images_bg, images) and torch.equal(labels_bg, labels)
        assert torch.equal(images, split.images[index])


def test_a_split_that_several_processes_would_copy_is_memory_mapped(medmnist_dir, monkeypatch):
    info = data.dataset_info("pneumoniamnist")  # val: 524 images of 28 x 28 = 411 kB
    monkeypatch.setattr(data, "_available_ram", lambda: int(411_000 * 8 / data.MMAP_FRACTION))
    assert not data.load_split(info, medmnist_dir, "val").memmapped
    assert data.load_split(info, medmnist_dir, "val", copies=16).memmapped


def test_a_failed_download_leaves_no_new_folder(tmp_path, monkeypatch):
    import urllib.error

    from medscope import data

    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing listens: fails at once, as offline
    target = tmp_path / "typo" / "medmnist" / "breastmnist.npz"
    with pytest.raises(urllib.error.URLError):
        data.download("https://zenodo.org/records/10519652/files/breastmnist.npz", target, "0" * 32)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- hostile files

def _npz(path, **overrides):
    """A small breastmnist-shaped .npz whose arrays ``overrides`` replace."""
    arrays = {}
    for split, n in zip(data.SPLITS, (6, 4, 4)):
        arrays[f"{split}_images"] = np.zeros((n, 28, 28), np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    arrays.update(overrides)
    np.savez_compressed(path, **arrays)
    return path


def _load(path, split="train", **kwargs):
    return data.load_split(data.dataset_info("breastmnist"), path.parent, split, check_md5=False, **kwargs)


@pytest.mark.parametrize("labels, message", [
    (np.array([["a"], ["b"], ["a"], ["b"], ["a"], ["b"]]), "expected integer class indices"),
    (np.array([[0.0], [np.nan], [1.0], [0.0], [1.0], [0.0]]), "expected integer class indices"),
    (np.array([[0.5], [1.0], [0.0], [1.0], [0.0], [1.0]]), "expected integer class indices"),
    (np.array([[0], [1], [2], [0], [1], [0]], np.uint8), "outside the 2 labels"),
    (np.zeros((6, 2), np.uint8), "expected (6, 1)"),
])
def test_labels_that_are_not_class_indices_are_refused(tmp_path, labels, message):
    path = _npz(tmp_path / "breastmnist.npz", train_labels=labels)
    with pytest.raises(UsageError, match=re.escape(message)):
        _load(path)


def test_an_empty_split_is_refused(tmp_path):
    path = _npz(tmp_path / "breastmnist.npz", test_images=np.zeros((0, 28, 28), np.uint8),
                test_labels=np.zeros((0, 1), np.uint8))
    with pytest.raises(UsageError, match="the test split is empty"):
        _load(path)


def _forge_headers(path, n: int) -> None:
    """Rewrite the train arrays' headers to declare ``n`` samples over the same few bytes."""
    import zipfile

    forged = path.with_suffix(".forged")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(forged, "w") as dst:
        for item in src.infolist():
            payload = src.read(item)
            shape = {"train_images.npy": (n, 28, 28), "train_labels.npy": (n, 1)}.get(item.filename)
            if shape:
                buffer = io.BytesIO()
                np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
                payload = buffer.getvalue() + payload[len(buffer.getvalue()):]
            dst.writestr(item, payload)
    forged.replace(path)


def test_a_huge_declared_array_is_refused_from_its_header_before_anything_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSCOPE_CACHE", str(tmp_path / "cache"))
    path = _npz(tmp_path / "breastmnist.npz")
    _forge_headers(path, 100_000_000)  # 73 GiB of images
    with pytest.raises(UsageError, match=r"would take 73\.0 GiB, more than the .* of available memory"):
        _load(path, mmap=False)
    _forge_headers(path, 10**12)  # more than any disk
    with pytest.raises(UsageError, match=r"GiB of free disk"):
        _load(path, mmap=True)
    assert not any((tmp_path / "cache").rglob("*.npy"))


def test_a_wrong_shape_is_refused_before_extraction_to_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSCOPE_CACHE", str(tmp_path / "cache"))
    path = _npz(tmp_path / "breastmnist.npz", train_images=np.zeros((6, 64, 64), np.uint8))
    with pytest.raises(UsageError, match="expected .N, 28, 28. uint8"):
        _load(path, mmap=True)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))
