"""Where the data sets come from: a data directory, else the cache, else a verified download.

Every file a package reads is listed here with its checksum. A file is looked for in

1. ``data_dir`` if given, else ``$SCRATCH_DATA_DIR`` (laid out as ``<dir>/<data set>/<file>``),
2. the cache, ``$SCRATCH_CACHE_DIR`` or ``~/.cache/scratch`` (same layout),
3. and, unless downloads are off (``download=False`` or ``SCRATCH_DOWNLOAD=0``), it is
   downloaded into the cache, to a temporary name first, and kept only if its checksum holds.

A gzip file is checked by the MD5 of its *decompressed* content, the value the data sets'
authors publish: re-compressing a file (as mirrors and Debian do) changes the bytes of the
``.gz`` but not what is inside. Other files are checked by SHA-256. A file that is a cut of
its only source (``prefix_bytes``: eng-fra's copy was uploaded cut mid-line) is truncated to
its published length before the check.

    python -m scratch_engine.tools.datasets fetch mnist     # download into the cache (verified)
    python -m scratch_engine.tools.datasets fetch --all     # every data set the packages read
    python -m scratch_engine.tools.datasets list            # what is known and where it is found
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import math
import os
import shutil
import struct
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratch_engine.data import DataLoader, as_pair, map_tensors
from scratch_engine.tools.files import remove_stale

_CHUNK = 1 << 20


class DataNotFoundError(FileNotFoundError):
    """A data set is neither in the data directory nor in the cache, and was not downloaded."""


class ChecksumError(ValueError):
    """A data file's content differs from the published checksum."""


@dataclass(frozen=True)
class DataFile:
    """One file of a data set: where to download it and how to verify it."""

    name: str
    urls: tuple[str, ...]
    sha256: str | None = None  # of the file as stored
    content_md5: str | None = None  # of the decompressed content, for .gz files
    prefix_bytes: int | None = None  # the file is the first N bytes of the download (a cut of its source)


@dataclass(frozen=True)
class DataSet:
    name: str
    files: tuple[DataFile, ...]
    source: str


def _idx_files(base_urls: Sequence[str], md5s: dict[str, str]) -> tuple[DataFile, ...]:
    return tuple(DataFile(name, tuple(url + name for url in base_urls), content_md5=md5) for name, md5 in md5s.items())


DATASETS: dict[str, DataSet] = {
    "mnist": DataSet(
        "mnist",
        _idx_files(
            ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
            {
                "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
                "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
                "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
                "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
            },
        ),
        "LeCun, Cortes and Burges; CC BY-SA 3.0",
    ),
    "fashion-mnist": DataSet(
        "fashion-mnist",
        _idx_files(
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            {
                "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
                "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
                "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
            },
        ),
        "Zalando Research; MIT",
    ),
    "tinyshakespeare": DataSet(
        "tinyshakespeare",
        (
            DataFile(
                "input.txt",
                ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
                sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            ),
        ),
        "karpathy/char-rnn; the text is public domain",
    ),
    # The shortest 76,037 pairs of manythings.org's Tatoeba-derived fra.txt: a copy on GitHub, pinned
    # by commit, whose uploader cut it mid-line; the data set is its complete lines.
    "eng-fra": DataSet(
        "eng-fra",
        (
            DataFile(
                "eng-fra.txt",
                (
                    "https://raw.githubusercontent.com/Soubhagya264/Language_Translator-Encoder-Decoder-/"
                    "f6c89651306aa93d2f0f0447ce15b553a530abb0/fra.txt",
                ),
                sha256="0054ea2102484f4800d0b2cca57460b6b4a2e05328e6954240601065b001b1a6",
                prefix_bytes=3_996_938,
            ),
        ),
        "Tatoeba contributors, CC BY 2.0 FR; pairs from manythings.org/anki",
    ),
}

CLASS_NAMES: dict[str, list[str]] = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


# --------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """``$SCRATCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/scratch``, else ``~/.cache/scratch``."""
    if os.environ.get("SCRATCH_CACHE_DIR"):
        return Path(os.environ["SCRATCH_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "scratch"


def search_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """The folders looked in, in order: ``data_dir`` (else ``$SCRATCH_DATA_DIR``), then the cache."""
    first = data_dir if data_dir is not None else os.environ.get("SCRATCH_DATA_DIR")
    dirs = [Path(first).expanduser()] if first else []
    cache = cache_dir()
    return dirs if cache in dirs else [*dirs, cache]  # named once, also when data_dir is the cache


def downloads_allowed(download: bool | None = None) -> bool:
    if download is not None:
        return download
    return os.environ.get("SCRATCH_DOWNLOAD", "1").strip().lower() not in ("0", "false", "no", "off")


# --------------------------------------------------------------------------- checks


def file_digest(path: Path, algorithm: str = "sha256", decompress: bool = False) -> str:
    """The hex digest of a file's bytes (of its gzip-decompressed bytes with ``decompress``), read in chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with gzip.open(path, "rb") if decompress else path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, file: DataFile) -> None:
    """Raise :class:`ChecksumError` unless ``path`` holds exactly ``file``'s published content."""
    try:
        if file.content_md5 is not None:
            actual, expected, what = file_digest(path, "md5", decompress=True), file.content_md5, "decompressed MD5"
        elif file.sha256 is not None:
            actual, expected, what = file_digest(path, "sha256", decompress=False), file.sha256, "SHA-256"
        else:
            return
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ChecksumError(f"{path} cannot be read as {file.name}: {err}") from None
    if actual != expected:
        raise ChecksumError(f"{path} has {what} {actual}, expected {expected}: the file is corrupt or another version")


# --------------------------------------------------------------------------- locate or download


def locate(name: str, data_dir: str | Path | None = None, download: bool | None = None) -> Path:
    """The folder holding every file of data set ``name``, verified; downloads into the cache if allowed."""
    dataset = _dataset(name)
    dirs = search_dirs(data_dir)
    for folder in dirs:
        candidate = folder / dataset.name
        if all((candidate / file.name).is_file() for file in dataset.files):
            for file in dataset.files:
                verify(candidate / file.name, file)
            return candidate
    if not downloads_allowed(download):
        raise DataNotFoundError(_not_found_message(dataset, dirs, "downloads are off"))
    target = cache_dir() / dataset.name
    for file in dataset.files:
        if not (target / file.name).is_file():
            try:
                fetch_file(file, target / file.name)
            except OSError as err:
                raise DataNotFoundError(_not_found_message(dataset, dirs, f"the download failed: {err}")) from None
        verify(target / file.name, file)
    return target


def _not_found_message(dataset: DataSet, dirs: Sequence[Path], why: str) -> str:
    looked = " and ".join(str(folder / dataset.name) for folder in dirs)
    return (
        f"data set {dataset.name!r} not found in {looked} ({why}); get it with "
        f"`python -m scratch_engine.tools.datasets fetch {dataset.name}` when online, or set SCRATCH_DATA_DIR "
        f"to a folder holding {dataset.name}/{dataset.files[0].name}"
    )


def fetch_file(file: DataFile, destination: Path) -> Path:
    """Download ``file`` to ``destination`` (trying each mirror), keeping it only if it verifies.

    Each mirror has :func:`download_seconds` in all (a server that drips bytes cannot hang the run); the
    partial file is removed on any failure, and partial files that a killed process left are removed first.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(destination.parent, f".{file.name}.*.part")
    errors = []
    for url in file.urls:
        handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{file.name}.", suffix=".part")
        os.close(handle)
        partial = Path(temporary)
        try:
            _download(url, partial)
            if file.prefix_bytes is not None:
                _keep_prefix(partial, file.prefix_bytes)
            verify(partial, file)
            os.replace(partial, destination)
            return destination
        except (OSError, ChecksumError) as err:
            errors.append(f"{url}: {err}")
        finally:
            partial.unlink(missing_ok=True)
    raise OSError("; ".join(errors))


def _keep_prefix(path: Path, size: int) -> None:
    if (downloaded := path.stat().st_size) < size:
        raise ChecksumError(f"the download has {downloaded:,} bytes, fewer than the {size:,} the data set keeps")
    os.truncate(path, size)


def download_seconds() -> float:
    """How long one download may take in all, from ``SCRATCH_DOWNLOAD_TIMEOUT`` (seconds; default 600)."""
    text = os.environ.get("SCRATCH_DOWNLOAD_TIMEOUT", "600")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"SCRATCH_DOWNLOAD_TIMEOUT must be a positive number of seconds, got {text!r}")
    return seconds


def _download(url: str, path: Path) -> None:
    seconds = download_seconds()
    deadline = time.monotonic() + seconds
    print(f"downloading {url}", file=sys.stderr, flush=True)  # before the connection, which may take a while
    request = urllib.request.Request(url, headers={"User-Agent": "scratch-engine"})
    with urllib.request.urlopen(request, timeout=min(30.0, seconds)) as response, path.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        from tqdm import tqdm

        with tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name, disable=None) as bar:
            while chunk := response.read1(_CHUNK):  # what has arrived: a slow drip cannot outlast the deadline
                try:
                    out.write(chunk)
                except OSError as error:  # ENOSPC, say: name the folder that is full
                    raise OSError(
                        error.errno, f"cannot write {path.name} into {path.parent}: {error.strerror}"
                    ) from None
                bar.update(len(chunk))
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not complete after {seconds:g} s (SCRATCH_DOWNLOAD_TIMEOUT)")


def _dataset(name: str) -> DataSet:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


# --------------------------------------------------------------------------- torchvision


_TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def load_image_dataset(name: str, data_dir: str | Path | None = None, download: bool | None = None) -> tuple[Any, Any]:
    """``(train, test)`` torchvision datasets (``MNIST`` or ``FashionMNIST``) from verified files, for code that
    wants torchvision's dataset API (the packages' training reads the same files with :func:`read_idx`).

    The IDX files are found (or downloaded) by :func:`locate`, then decompressed into
    ``<cache>/torchvision/<class>/raw/``, where torchvision reads them with ``download=False``:
    torchvision itself never touches the network. Each dataset has ``.data`` (uint8,
    ``N x 28 x 28``) and ``.targets`` (int64, ``N``) and serves ``(image, label)`` pairs.
    Needs the ``vision`` extra: ``pip install scratch-engine[vision]``.
    """
    if name not in _TORCHVISION_CLASSES:
        raise ValueError(f"unknown image data set {name!r}; known: {', '.join(_TORCHVISION_CLASSES)}")
    try:
        import torchvision
    except ImportError:
        raise ImportError(f"loading {name} needs torchvision: pip install 'scratch-engine[vision]'") from None
    except Exception as error:  # installed but broken, e.g. built for another torch: "operator ... does not exist"
        raise ImportError(
            f"loading {name} needs a working torchvision, but importing it failed ({error}); install the "
            f"torchvision release that matches torch {torch.__version__}: pip install 'scratch-engine[vision]'"
        ) from None
    folder = locate(name, data_dir, download)
    class_name = _TORCHVISION_CLASSES[name]
    root = cache_dir() / "torchvision"
    raw = root / class_name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(
        root / class_name / "processed", ignore_errors=True
    )  # torchvision would prefer these unverified files
    for file in DATASETS[name].files:
        _decompress_once(folder / file.name, raw / file.name.removesuffix(".gz"), file.content_md5)
    dataset_class = getattr(torchvision.datasets, class_name)
    return dataset_class(str(root), train=True, download=False), dataset_class(str(root), train=False, download=False)


def image_tensors(
    name: str,
    shape: Sequence[int],
    data_dir: str | Path | None = None,
    download: bool | None = None,
    train_samples: int | None = None,
    test_samples: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``X_train, y_train, X_test, y_test`` of an image data set as whole tensors, ready to batch, read from its
    verified IDX files (:func:`read_idx`: no torchvision, and no other copy of the data is ever read).

    Images are reshaped to ``(N, *shape)`` (``(784,)`` for an MLP, ``(1, 28, 28)`` for a CNN),
    scaled to [0, 1] and standardised with the mean and standard deviation of the (kept)
    training pixels, so batches are cheap row selections instead of per-image transforms.
    ``train_samples`` / ``test_samples`` keep only the first images (quick runs and tests).
    """
    for label, limit in (("train_samples", train_samples), ("test_samples", test_samples)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{label} must be a positive integer or None (all), got {limit!r}")

    if name not in CLASS_NAMES:
        raise ValueError(f"unknown image data set {name!r}; known: {', '.join(CLASS_NAMES)}")
    folder = locate(name, data_dir, download)  # verified: these very bytes were published
    images, labels = {}, {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images[split] = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels[split] = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").long()

    def pixels(split: str, limit: int | None) -> Tensor:
        kept = images[split][:limit] if limit is not None else images[split]
        return kept.reshape(len(kept), *shape).float().div_(255.0)

    X_train, X_test = pixels("train", train_samples), pixels("test", test_samples)
    y_train, y_test = labels["train"][: len(X_train)], labels["test"][: len(X_test)]
    mean, std = X_train.mean(), X_train.std()
    return (X_train - mean) / std, y_train, (X_test - mean) / std, y_test


def read_idx(path: Path) -> Tensor:
    """The uint8 array in an IDX file (gzipped or not), the format of MNIST and Fashion-MNIST.

    The header is two zero bytes, the element type (``0x08``: unsigned byte), the number of dimensions
    :math:`d`, then :math:`d` big-endian 32-bit sizes; the values follow in row-major order.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        data = file.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ChecksumError(f"{path} is not an IDX file of unsigned bytes")
    dims = data[3]
    sizes = struct.unpack(f">{dims}I", data[4 : 4 + 4 * dims])
    values = data[4 + 4 * dims :]
    if len(values) != math.prod(sizes):
        raise ChecksumError(f"{path} holds {len(values)} values, its header says {' x '.join(map(str, sizes))}")
    return torch.frombuffer(bytearray(values), dtype=torch.uint8).reshape(sizes)


def _decompress_once(source: Path, target: Path, md5: str | None) -> None:
    if target.is_file() and md5 is not None and file_digest(target, "md5", decompress=False) == md5:
        return
    remove_stale(target.parent, f".{target.name}.*.part")
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with gzip.open(source, "rb") as stream, os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(stream, out, _CHUNK)
        os.replace(temporary, target)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise OSError(error.errno, f"cannot write {target}: {error.strerror}") from None


# --------------------------------------------------------------------------- command line


class DatasetLoader(DataLoader):
    """:class:`~scratch_engine.DataLoader` over a map-style dataset (``__len__``, and ``__getitem__`` giving
    ``(x, y)`` pairs, e.g. a torchvision dataset with a ``ToTensor`` transform) instead of two tensors.

    It is never materialised: each batch indexes the dataset and stacks its items field by field
    (tensors with ``torch.stack``, Python numbers with ``torch.tensor``). Order, epochs and sharding are
    the ``DataLoader``'s.
    """

    def __init__(self, dataset: Any, batch_size: int = 32, shuffle: bool = True, **kwargs: Any) -> None:
        super().__init__(dataset, None, batch_size, shuffle, **kwargs)

    @staticmethod
    def _check_samples(X: Any, y: Any) -> None:
        if isinstance(X, Tensor) or not (hasattr(X, "__len__") and hasattr(X, "__getitem__")):
            raise TypeError(
                f"DatasetLoader expects a map-style dataset, got {type(X).__name__}: for tensors use DataLoader"
            )
        if len(X) == 0:
            raise ValueError("DatasetLoader got no samples (the dataset is empty)")

    def batch(self, indices: Tensor) -> tuple[Any, Any]:
        if len(indices) == 0:  # this rank's share of a short last batch: the right types, no rows
            return map_tensors(lambda t: t[:0], _collate([as_pair(self.X[0], "dataset items")]))
        items = [self.X[i] for i in indices.tolist()]
        as_pair(items[0], "dataset items")  # one look per batch: a dataset gives items of one kind
        return _collate(items)


def _collate(items: list[Any]) -> Any:
    """Stack a list of samples field by field: ``[(x, y), ...] -> (X, Y)``."""
    first = items[0]
    if isinstance(first, (tuple, list)):
        return tuple(_collate([item[k] for item in items]) for k in range(len(first)))
    if isinstance(first, Tensor):
        return torch.stack(items)
    if isinstance(first, (bool, int, float)):
        return torch.tensor(items)
    raise TypeError(
        "DatasetLoader can only batch tensors and Python numbers, "
        f"got a {type(first).__module__}.{type(first).__name__}; "
        "give the dataset a transform that returns tensors (e.g. torchvision.transforms.ToTensor())"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scratch_engine.tools.datasets", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="download data sets into the cache (verified)")
    fetch.add_argument("names", nargs="*", metavar="NAME", help=", ".join(DATASETS))
    fetch.add_argument("--all", action="store_true", help="every known data set")
    commands.add_parser("list", help="known data sets and where each is found")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        if not args.names and not args.all:
            fetch.error("name the data sets to fetch, or pass --all")
        if unknown := [name for name in args.names if name not in DATASETS]:
            fetch.error(f"unknown data set {', '.join(map(repr, unknown))}; known: {', '.join(DATASETS)}")
        failed = []
        for name in DATASETS if args.all else args.names:  # every one is tried: one that fails stops no other
            try:
                print(f"{name}: {locate(name, download=True)}")
            except (DataNotFoundError, ChecksumError) as err:
                print(f"error: {err}", file=sys.stderr)
                failed.append(name)
        if failed:
            print(f"error: not fetched: {', '.join(failed)}", file=sys.stderr)
        return 1 if failed else 0
    for name, dataset in DATASETS.items():
        try:
            where = str(locate(name, download=False))
        except (DataNotFoundError, ChecksumError) as err:
            where = f"missing ({type(err).__name__})"
        print(f"{name:16} {where}  [{dataset.source}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
