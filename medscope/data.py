"""MedMNIST files: metadata, download, verification and whole-split tensors.

Metadata (task, labels, channels, split sizes, URL and MD5) comes from the
``medmnist`` package's ``INFO``; nothing of that table is copied here.

Each split is loaded once as a uint8 tensor laid out ``(N, C, H, W)`` or
``(N, C, D, H, W)``. The official files are compressed ``.npz`` archives, which
cannot be memory-mapped; a split too large for comfort in RAM is therefore
extracted once to an ``.npy`` file in the cache folder and memory-mapped from
there (see :func:`load_split`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.utils.data

from medscope import atomic, tasks
from medscope.errors import UsageError

SPLITS = ("train", "val", "test")
SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)

# The task names; medscope.tasks owns them (use medscope.tasks.Task for anything that depends on them).
TASK_BINARY = tasks.BINARY
TASK_MULTICLASS = tasks.MULTICLASS
TASK_MULTILABEL = tasks.MULTILABEL
TASK_ORDINAL = tasks.ORDINAL

# Fraction of available RAM one split may take before it is memory-mapped.
MMAP_FRACTION = 0.25


def _info_table() -> dict:
    from medmnist.info import INFO

    return INFO


def dataset_flags() -> list[str]:
    return list(_info_table())


@dataclass(frozen=True)
class DatasetInfo:
    flag: str
    size: int
    task: str
    labels: dict
    n_channels: int
    n_samples: dict
    url: str
    md5: str
    description: str

    @property
    def is_3d(self) -> bool:
        return self.flag.endswith("3d")

    @property
    def spatial_dims(self) -> int:
        return 3 if self.is_3d else 2

    @property
    def num_classes(self) -> int:
        """Number of model outputs: labels for multi-label, classes otherwise."""
        return len(self.labels)

    @property
    def file_name(self) -> str:
        return f"{self.flag}.npz" if self.size == 28 else f"{self.flag}_{self.size}.npz"

    @property
    def class_names(self) -> list[str]:
        return [self.labels[str(i)] for i in range(len(self.labels))]


def dataset_info(flag: str, size: int = 28) -> DatasetInfo:
    table = _info_table()
    flag = flag.lower()
    if flag not in table:
        raise UsageError(f"unknown dataset {flag!r}; choose one of: {', '.join(table)}")
    sizes = SIZES_3D if flag.endswith("3d") else SIZES_2D
    if size not in sizes:
        raise UsageError(f"{flag} comes in sizes {', '.join(map(str, sizes))}, not {size}")
    entry = table[flag]
    suffix = "" if size == 28 else f"_{size}"
    return DatasetInfo(
        flag=flag, size=size, task=entry["task"], labels=dict(entry["label"]),
        n_channels=int(entry["n_channels"]), n_samples=dict(entry["n_samples"]),
        url=entry[f"url{suffix}"], md5=entry[f"MD5{suffix}"], description=entry["description"],
    )


def cache_dir() -> Path:
    return Path(os.environ.get("MEDSCOPE_CACHE") or Path.home() / ".cache" / "medscope")


def md5sum(path, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _verified_md5(path: Path) -> str:
    """MD5 of ``path``, remembered by (size, mtime) so a 224 px file is hashed once."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_path = cache_dir() / "md5.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key not in memo:
        memo[key] = md5sum(path)
        try:
            atomic.write_json(memo_path, memo)
        except OSError:
            pass  # a read-only home only costs a re-hash next time
    return memo[key]


def download(url: str, target: Path, md5: str, timeout: float = 30.0) -> None:
    """Fetch ``url`` to ``target`` (atomically), checking its MD5.

    A folder this call had to create is removed again if the download fails, so a
    mistyped ``--data-dir`` is not left behind as an empty folder.
    """
    created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    try:
        with atomic.atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
            got = md5sum(tmp)
            if got != md5:
                raise UsageError(f"downloaded {url} but its MD5 is {got}, expected {md5}; try again later")
    except BaseException:
        for folder in created:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def locate(info: DatasetInfo, data_dir, *, allow_download: bool = True, check_md5: bool = True) -> Path:
    """Path of the dataset file, downloading it if missing and the network allows."""
    path = Path(data_dir).expanduser() / info.file_name
    if not path.is_file():
        if not allow_download:
            raise UsageError(f"{path} not found; download it from {info.url}")
        try:
            print(f"downloading {info.url} -> {path}")
            download(info.url, path, info.md5)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UsageError(f"{path} not found and the download failed ({reason}); "
                             f"download {info.url} to that path, or set --data-dir / MEDMNIST_DIR") from None
    if check_md5:
        got = _verified_md5(path)
        if got != info.md5:
            raise UsageError(f"{path} has MD5 {got}, expected {info.md5} (truncated or not the official file); "
                             f"delete it and download {info.url}")
    return path


def _expected_image_shape(info: DatasetInfo) -> tuple:
    side = (info.size,) * info.spatial_dims
    return side + ((3,) if info.n_channels == 3 else ())


def _npy_header(zf: zipfile.ZipFile, member: str) -> tuple[tuple, np.dtype]:
    """Shape and dtype an .npy member declares, read from its header alone (nothing is decompressed
    beyond the first bytes)."""
    with zf.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read(fh, max_header_size=100_000)
    return tuple(shape), np.dtype(dtype)


def _check_arrays(path: Path, info: DatasetInfo) -> dict[str, tuple[tuple, np.dtype]]:
    """Check every split's arrays from their headers, before anything is read: present, of the
    dataset's shape and dtype, not empty, and small enough for this machine. Returns the headers."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}.npy" not in names]
            if missing:
                raise UsageError(f"{path} lacks the arrays {', '.join(missing)}; it is not a MedMNIST file")
            headers = {m: _npy_header(zf, f"{m}.npy") for m in (f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise UsageError(f"{path} is not a readable .npz file ({exc}); delete it and download {info.url}") from None
    want = _expected_image_shape(info)
    n_labels = len(info.labels) if info.task == TASK_MULTILABEL else 1
    for split in SPLITS:
        (shape, dtype), (lshape, ldtype) = headers[f"{split}_images"], headers[f"{split}_labels"]
        if dtype != np.uint8 or shape[1:] != want:
            raise UsageError(f"{path}: {split}_images is declared {shape} {dtype}, "
                             f"expected (N, {', '.join(map(str, want))}) uint8; not a {info.flag} file")
        if shape[0] == 0:
            raise UsageError(f"{path}: the {split} split is empty; not a usable {info.flag} file")
        if lshape != (shape[0], n_labels):
            raise UsageError(f"{path}: {split}_labels is declared {lshape}, expected ({shape[0]}, {n_labels})")
        if ldtype.kind not in "iub":
            raise UsageError(f"{path}: {split}_labels are {ldtype}, expected integer class indices")
    return headers


def _check_labels(path: Path, info: DatasetInfo, split: str, labels: np.ndarray) -> None:
    """Label values: integers within the dataset's classes (0/1 per label for multi-label)."""
    limit = 2 if info.task == TASK_MULTILABEL else len(info.labels)
    if labels.size and (labels.min() < 0 or labels.max() >= limit):
        raise UsageError(f"{path}: {split}_labels hold values outside the {len(info.labels)} labels of {info.flag}")


def _declared_bytes(header: tuple[tuple, np.dtype]) -> int:
    shape, dtype = header
    return int(np.prod(shape, dtype=np.float64)) * dtype.itemsize


def load_arrays(path: Path, info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split's (images, labels) from a checked archive as numpy arrays, checked."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            images = archive[f"{split}_images"]
            labels = archive[f"{split}_labels"]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise UsageError(f"{path}: cannot read {split} split ({exc}); delete it and download {info.url}") from None
    want = _expected_image_shape(info)
    if images.dtype != np.uint8 or images.shape[1:] != want:
        raise UsageError(f"{path}: {split}_images has shape {images.shape} {images.dtype}, "
                         f"expected (N, {', '.join(map(str, want))}) uint8")
    n_labels = len(info.labels) if info.task == TASK_MULTILABEL else 1
    if labels.ndim != 2 or labels.shape != (images.shape[0], n_labels):
        raise UsageError(f"{path}: {split}_labels has shape {labels.shape}, expected ({images.shape[0]}, {n_labels})")
    _check_labels(path, info, split, labels)
    return images, labels


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


@dataclass
class Split:
    """One split held as a uint8 tensor ``(N, C, *spatial)`` plus integer labels."""

    images: torch.Tensor
    labels: torch.Tensor  # (N, 1) int64 or (N, L) float32 for multi-label
    memmapped: bool = False

    def __len__(self) -> int:
        return self.images.shape[0]


def _to_split(images: np.ndarray, labels: np.ndarray, info: DatasetInfo, memmapped: bool) -> Split:
    if info.n_channels == 3 and not info.is_3d:
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2)  # channels-last view, no copy
    else:
        tensor = torch.from_numpy(images).unsqueeze(1)
    if info.task == TASK_MULTILABEL:
        target = torch.from_numpy(labels.astype(np.float32))
    else:
        target = torch.from_numpy(labels.astype(np.int64))
    return Split(tensor, target, memmapped)


def load_split(info: DatasetInfo, data_dir, split: str, *, check_md5: bool = True,
               allow_download: bool = True, mmap: bool | None = None, copies: int = 1) -> Split:
    """Load one split once, as a uint8 tensor.

    ``mmap=None`` decides by size: a split larger than ``MMAP_FRACTION`` of the
    available RAM is extracted to ``<cache>/<file>/<split>_images.npy`` and
    memory-mapped, so the 224 px files train on machines with less RAM.
    ``copies`` is the number of processes on this machine that load the split
    (torchrun's ``LOCAL_WORLD_SIZE``): each would hold its own copy in RAM,
    while a memory map's pages are one page cache that they all share.
    """
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose train, val or test")
    path = locate(info, data_dir, allow_download=allow_download, check_md5=check_md5)
    headers = _check_arrays(path, info)
    size = _declared_bytes(headers[f"{split}_images"])
    if mmap is None:
        mmap = size * copies > MMAP_FRACTION * _available_ram()
    room = shutil.disk_usage(_existing_parent(cache_dir())).free if mmap else _available_ram()
    if size > room:
        where = f"free disk in {cache_dir()}" if mmap else "available memory"
        raise UsageError(f"{path}: the {split} images would take {size / 2**30:.1f} GiB, more than the "
                         f"{room / 2**30:.1f} GiB of {where}; not a MedMNIST file, or too large for this machine")
    if not mmap:
        images, labels = load_arrays(path, info, split)
        return _to_split(images, labels, info, memmapped=False)
    images, labels = _extract_npy(path, info, split, headers[f"{split}_images"])
    return _to_split(images, labels, info, memmapped=True)


def _extract_npy(path: Path, info: DatasetInfo, split: str, header: tuple[tuple, np.dtype]):
    """Extract a split's images to an .npy file once, then memory-map it.

    A cached file that does not hold exactly the array ``header`` declares
    (truncated, replaced, damaged header) is extracted again: the cache is
    medscope's own, so repairing it is better than refusing to train.
    """
    stat = path.stat()
    folder = cache_dir() / "mmap" / f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}"
    npy = folder / f"{split}_images.npy"
    if npy.is_file() and not _cached_array_intact(npy, header):
        npy.unlink()
    if not npy.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path) as zf, atomic.atomic_path(npy) as tmp:
            with zf.open(f"{split}_images.npy") as src, open(tmp, "wb") as dst:
                while block := src.read(1 << 24):  # streamed: never the whole split in RAM
                    dst.write(block)
        if not _cached_array_intact(npy, header):
            raise UsageError(f"{npy}: the extracted {split} images do not match {path}'s header; "
                             f"delete {folder} and try again")
    images = np.load(npy, mmap_mode="c")  # copy-on-write: torch wants a writable array
    with np.load(path, allow_pickle=False) as archive:
        labels = archive[f"{split}_labels"]
    want = _expected_image_shape(info)
    if images.dtype != np.uint8 or images.shape[1:] != want or labels.shape[0] != images.shape[0]:
        raise UsageError(f"{path}: {split} split has images {images.shape} and labels {labels.shape}; "
                         "not a MedMNIST file")
    _check_labels(path, info, split, labels)
    return images, labels


def _cached_array_intact(npy: Path, header: tuple[tuple, np.dtype]) -> bool:
    """Whether ``npy`` declares the shape and dtype of ``header`` and is exactly as long as that array needs."""
    shape, dtype = header
    try:
        with open(npy, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            found_shape, fortran, found_dtype = read(fh, max_header_size=100_000)
            data_start = fh.tell()
        size = npy.stat().st_size
    except (OSError, ValueError, EOFError):
        return False
    return (tuple(found_shape) == tuple(shape) and np.dtype(found_dtype) == dtype and not fortran
            and size == data_start + _declared_bytes(header))


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def load_dataset(info: DatasetInfo, data_dir, *, check_md5: bool = True, splits=SPLITS, mmap=None,
                 copies: int = 1) -> dict[str, Split]:
    """All requested splits, verified once (``mmap`` and ``copies`` as in :func:`load_split`)."""
    locate(info, data_dir, check_md5=check_md5)  # download and verify once, before any split
    return {s: load_split(info, data_dir, s, check_md5=False, allow_download=False, mmap=mmap, copies=copies)
            for s in splits}


def subset(split: Split, n: int, seed: int) -> Split:
    """A seeded random subset of ``n`` samples (the whole split if it is smaller)."""
    if n >= len(split):
        return split
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(split), generator=generator)[:n].sort().values
    if split.memmapped:
        images = torch.from_numpy(np.ascontiguousarray(split.images.numpy()[index.numpy()]))
    else:
        images = split.images[index]
    return Split(images, split.labels[index], memmapped=False)


def normalize(batch_uint8: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """uint8 [0, 255] -> float in [-1, 1], the MedMNIST baseline normalization."""
    return batch_uint8.to(dtype).mul_(2.0 / 255.0).sub_(1.0)


def gather(split: Split, index: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and labels of ``index`` on ``device`` (sorted reads for memory maps)."""
    if split.memmapped:
        order = torch.argsort(index)
        sorted_index = index[order].numpy()
        images = torch.from_numpy(np.ascontiguousarray(split.images.numpy()[sorted_index]))
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        images = images[inverse]
    else:
        images = split.images[index]
    non_blocking = device.type == "cuda"
    if non_blocking:
        images = images.pin_memory()
    return images.to(device, non_blocking=non_blocking), split.labels[index].to(device, non_blocking=non_blocking)


def batches(split: Split, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
            drop_last: bool = False, indices: torch.Tensor | None = None):
    """Index batches over a split (optionally a shard given by ``indices``)."""
    n = len(split)
    order = indices if indices is not None else torch.arange(n)
    if shuffle:
        order = order[torch.randperm(len(order), generator=generator)]
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        chunk = order[start:start + batch_size]
        if len(chunk):
            yield chunk


class _BatchReader(torch.utils.data.Dataset):
    """A split read one whole batch at a time: ``reader[index_tensor]`` is that batch.

    The batches' indices are chosen in the training process (so shuffling and
    sharding stay deterministic); loader processes only read them.
    """

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: torch.Tensor):
        return gather(self.split, index, torch.device("cpu"))


def load_batches(split: Split, index_batches, device, *, workers: int = 0, prefetch: int = 2):
    """Images (uint8) and labels of each index batch, on ``device``, in order.

    Parameters
    ----------
    index_batches : sequence of tensors
        The batches to read, in the order they are wanted.
    workers : int
        0 reads each batch when it is needed (the training loop waits for the
        disk). ``N > 0`` reads ahead in ``N`` background processes, at most
        ``N * prefetch`` batches ahead, pinned for a fast copy to a GPU; the
        bounded queue keeps memory bounded however large the split is.
    """
    if workers <= 0:
        for index in index_batches:
            yield gather(split, index, device)
        return
    import multiprocessing

    # fork: the loader processes inherit the memory map (or the in-RAM split)
    # instead of receiving a pickled copy of it
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    # a generator of its own: the loader draws its workers' seeds from it, not from the global RNG
    # that dropout and MixUp use, so --workers does not change the numbers
    loader = torch.utils.data.DataLoader(
        _BatchReader(split), batch_size=None, sampler=list(index_batches), num_workers=workers,
        prefetch_factor=prefetch, pin_memory=device.type == "cuda", multiprocessing_context=context,
        generator=torch.Generator().manual_seed(0))
    non_blocking = device.type == "cuda"
    for images, labels in loader:
        yield images.to(device, non_blocking=non_blocking), labels.to(device, non_blocking=non_blocking)
