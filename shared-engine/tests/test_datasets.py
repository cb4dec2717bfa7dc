"""Data files: found in the data directory or the cache, downloaded only when allowed, always verified."""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.server
import re
import struct
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from scratch_engine.tools import datasets
from scratch_engine.tools.datasets import ChecksumError, DataFile, DataNotFoundError, DataSet, locate, verify
from scratch_engine.tools.testing import require_data_dir

CONTENT = b"the quick brown fox jumps over the lazy dog\n" * 100


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCRATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SCRATCH_DATA_DIR", raising=False)
    monkeypatch.delenv("SCRATCH_DOWNLOAD", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake data set 'toy' whose 'server' is a local folder reached by file:// URLs."""
    server = tmp_path / "server"
    server.mkdir()
    (server / "toy.txt.gz").write_bytes(gzip.compress(CONTENT, mtime=0))
    (server / "plain.txt").write_bytes(CONTENT)
    files = (
        DataFile(
            "toy.txt.gz",
            (server.as_uri() + "/missing.gz", server.as_uri() + "/toy.txt.gz"),
            content_md5=hashlib.md5(CONTENT).hexdigest(),
        ),
        DataFile("plain.txt", (server.as_uri() + "/plain.txt",), sha256=hashlib.sha256(CONTENT).hexdigest()),
    )
    monkeypatch.setitem(datasets.DATASETS, "toy", DataSet("toy", files, "test"))
    return server


def test_download_goes_to_the_cache_through_mirrors_and_verifies(isolated_cache: Path, remote: Path) -> None:
    folder = locate("toy", download=True)
    assert folder == isolated_cache / "toy"
    assert gzip.decompress((folder / "toy.txt.gz").read_bytes()) == CONTENT
    assert (folder / "plain.txt").read_bytes() == CONTENT
    assert not list(folder.glob(".*.part"))
    (remote / "plain.txt").unlink()  # served from the cache from now on
    assert locate("toy", download=False) == folder


def test_corrupt_download_is_rejected_and_nothing_is_kept(isolated_cache: Path, remote: Path) -> None:
    (remote / "plain.txt").write_bytes(CONTENT + b"tampered")
    with pytest.raises(DataNotFoundError, match=r"the download failed: .*SHA-256 .* expected"):
        locate("toy", download=True)
    assert not (isolated_cache / "toy" / "plain.txt").exists()
    assert not list((isolated_cache / "toy").glob(".*.part"))


def test_downloads_off_gives_one_line_saying_where_and_how(
    isolated_cache: Path, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRATCH_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("SCRATCH_DOWNLOAD", "0")
    with pytest.raises(DataNotFoundError) as info:
        locate("toy")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "nowhere" / "toy") in message
    assert str(isolated_cache / "toy") in message
    assert "python -m scratch_engine.tools.datasets fetch toy" in message
    assert "SCRATCH_DATA_DIR" in message


def test_a_data_dir_that_is_the_cache_is_named_once(isolated_cache: Path, remote: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        locate("toy", data_dir=isolated_cache, download=False)  # what require_data_dir passes without SCRATCH_DATA_DIR
    assert str(info.value).count(str(isolated_cache / "toy")) == 1, str(info.value)


def test_data_dir_comes_first_and_a_recompressed_gzip_still_verifies(
    isolated_cache: Path, remote: Path, tmp_path: Path
) -> None:
    local = tmp_path / "data" / "toy"
    local.mkdir(parents=True)
    (local / "toy.txt.gz").write_bytes(gzip.compress(CONTENT, compresslevel=1, mtime=123))  # other bytes, same content
    (local / "plain.txt").write_bytes(CONTENT)
    assert locate("toy", data_dir=tmp_path / "data", download=False) == local


def test_a_corrupt_local_file_is_an_error_not_a_silent_fallback(
    isolated_cache: Path, remote: Path, tmp_path: Path
) -> None:
    local = tmp_path / "data" / "toy"
    local.mkdir(parents=True)
    (local / "toy.txt.gz").write_bytes(b"not gzip at all")
    (local / "plain.txt").write_bytes(CONTENT)
    with pytest.raises(ChecksumError, match=r"cannot be read as toy\.txt\.gz"):
        locate("toy", data_dir=tmp_path / "data", download=True)


def test_a_cut_of_its_source_is_truncated_before_the_check(isolated_cache: Path, remote: Path) -> None:
    (remote / "cut.txt").write_bytes(CONTENT + b"a partial li")  # uploaded cut mid-line, like eng-fra's source
    cut = DataFile("cut.txt", ((remote / "cut.txt").as_uri(),), sha256=hashlib.sha256(CONTENT).hexdigest())
    datasets.DATASETS["toy"] = DataSet("toy", (replace(cut, prefix_bytes=len(CONTENT)),), "test")
    assert (locate("toy", download=True) / "cut.txt").read_bytes() == CONTENT
    (isolated_cache / "toy" / "cut.txt").unlink()
    datasets.DATASETS["toy"] = DataSet("toy", (replace(cut, prefix_bytes=len(CONTENT) + 100),), "test")
    with pytest.raises(DataNotFoundError, match=r"the download has 4,412 bytes, fewer than the 4,500"):
        locate("toy", download=True)
    assert list((isolated_cache / "toy").iterdir()) == []


def test_unknown_data_set() -> None:
    with pytest.raises(ValueError, match="unknown data set 'imagenet'; known: mnist, fashion-mnist"):
        locate("imagenet")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "tinyshakespeare", "eng-fra"])
def test_the_shared_data_matches_the_published_checksums(name: str) -> None:
    root = require_data_dir(name)
    folder = locate(name, data_dir=root, download=False)
    for file in datasets.DATASETS[name].files:
        verify(folder / file.name, file)  # locate verified already; this documents what is checked
    assert folder == root / name


def test_command_line_list(capsys: pytest.CaptureFixture[str], isolated_cache: Path, remote: Path) -> None:
    assert datasets.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out
    assert "missing" in out


def test_command_line_fetch(
    capsys: pytest.CaptureFixture[str], isolated_cache: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "DATASETS", {"toy": datasets.DATASETS["toy"]})  # --all: nothing else is fetched
    assert datasets.main(["fetch", "--all"]) == 0
    assert capsys.readouterr().out == f"toy: {isolated_cache / 'toy'}\n"
    for argv, error in (
        (["fetch"], "name the data sets to fetch, or pass --all"),
        (["fetch", "toy", "imagenet"], "unknown data set 'imagenet'; known: toy"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            datasets.main(argv)
        assert exit_info.value.code == 2
        assert error in capsys.readouterr().err
    (remote / "plain.txt").unlink()
    (isolated_cache / "toy" / "plain.txt").unlink()
    assert datasets.main(["fetch", "toy"]) == 1
    assert "error: data set 'toy' not found" in capsys.readouterr().err
    gzipped = DataSet("zipped", datasets.DATASETS["toy"].files[:1], "test")  # its file is still served
    monkeypatch.setattr(datasets, "DATASETS", {"toy": datasets.DATASETS["toy"], "zipped": gzipped})
    assert datasets.main(["fetch", "--all"]) == 1  # offline for one: the others are still fetched
    out, err = capsys.readouterr()
    assert out == f"zipped: {isolated_cache / 'zipped'}\n"
    assert err.strip().splitlines()[-1] == "error: not fetched: toy"


def test_image_datasets_name_the_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if torchvision were not installed
    with pytest.raises(ImportError, match=r"pip install 'scratch-engine\[vision\]'"):
        datasets.load_image_dataset("mnist")
    with pytest.raises(ValueError, match="unknown image data set 'cifar10'"):
        datasets.load_image_dataset("cifar10")


def test_tests_find_fetched_data_in_the_cache_without_scratch_data_dir(isolated_cache: Path, remote: Path) -> None:
    with pytest.raises(AssertionError, match=r"this test needs real data: .*fetch toy"):
        require_data_dir("toy")  # not fetched yet: a failure that says how to get it, never a download
    assert not (isolated_cache / "toy").exists()
    locate("toy", download=True)  # what `python -m scratch_engine.tools.datasets fetch toy` does
    assert require_data_dir("toy") == isolated_cache


def test_a_scratch_data_dir_that_is_not_a_folder_fails(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRATCH_DATA_DIR", str(isolated_cache / "nowhere"))
    with pytest.raises(AssertionError, match="is not a folder"):
        require_data_dir("toy")


MNIST_LABEL_COUNTS = {  # per class, in the published files (as torchvision reads them)
    "mnist": (
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ),
    "fashion-mnist": ([6000] * 10, [1000] * 10),
}


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_image_tensors_read_the_verified_idx_files_and_nothing_else(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = require_data_dir(name)
    monkeypatch.setenv("SCRATCH_CACHE_DIR", str(tmp_path))
    planted = tmp_path / "torchvision" / ("MNIST" if name == "mnist" else "FashionMNIST") / "processed"
    planted.mkdir(parents=True)  # what torchvision would read instead of the raw files (#18): never used here
    torch.save((torch.zeros(5, 28, 28, dtype=torch.uint8), torch.zeros(5, dtype=torch.long)), planted / "training.pt")
    torch.save((torch.zeros(5, 28, 28, dtype=torch.uint8), torch.zeros(5, dtype=torch.long)), planted / "test.pt")
    monkeypatch.setitem(sys.modules, "torchvision", None)  # no torchvision needed
    X_train, y_train, X_test, y_test = datasets.image_tensors(name, (1, 28, 28), root, download=False)
    assert (X_train.shape, X_test.shape) == ((60_000, 1, 28, 28), (10_000, 1, 28, 28))
    assert (torch.bincount(y_train).tolist(), torch.bincount(y_test).tolist()) == MNIST_LABEL_COUNTS[name]
    assert abs(float(X_train.mean())) < 1e-5
    assert float(X_train.std()) == pytest.approx(1.0, abs=1e-4)
    raw = datasets.read_idx(root / name / "t10k-images-idx3-ubyte.gz")
    assert (raw.dtype, raw.shape) == (torch.uint8, (10_000, 28, 28))
    assert int(raw.max()) == 255


def test_read_idx_refuses_what_is_not_an_idx_file_of_bytes(tmp_path: Path) -> None:
    good = tmp_path / "good.idx"
    good.write_bytes(b"\0\0\x08\x02" + struct.pack(">II", 2, 3) + bytes(range(6)))
    assert datasets.read_idx(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    (tmp_path / "short.idx").write_bytes(b"\0\0\x08\x02" + struct.pack(">II", 2, 3) + bytes(range(5)))
    with pytest.raises(ChecksumError, match=r"short\.idx holds 5 values, its header says 2 x 3"):
        datasets.read_idx(tmp_path / "short.idx")
    (tmp_path / "float.idx").write_bytes(b"\0\0\x0d\x01" + struct.pack(">I", 1) + bytes(4))
    with pytest.raises(ChecksumError, match=r"float\.idx is not an IDX file of unsigned bytes"):
        datasets.read_idx(tmp_path / "float.idx")


class _Drip(http.server.BaseHTTPRequestHandler):
    """A server that sends its bytes one every 0.2 s: each read succeeds, the whole never comes."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(1000):
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    def log_message(self, *args: object) -> None: ...


def test_a_slow_drip_download_ends_at_its_deadline_and_leaves_nothing(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/slow.bin"
        file = DataFile("slow.bin", (url,), sha256="0" * 64)
        monkeypatch.setenv("SCRATCH_DOWNLOAD_TIMEOUT", "1.5")
        start = time.monotonic()
        with pytest.raises(OSError, match=r"not complete after 1\.5 s \(SCRATCH_DOWNLOAD_TIMEOUT\)"):
            datasets.fetch_file(file, isolated_cache / "slow" / "slow.bin")
        assert time.monotonic() - start < 10  # it used to hang for as long as the server dripped
    finally:
        server.shutdown()
    assert f"downloading {url}" in capsys.readouterr().err  # said before the connection
    assert list((isolated_cache / "slow").iterdir()) == []


def test_a_full_disk_names_the_folder_and_stale_partial_files_go(
    isolated_cache: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = isolated_cache / "toy"
    folder.mkdir(parents=True)
    (folder / ".plain.txt.x1y2z3.part").write_bytes(b"left by a kill -9")  # an interrupted download's
    real_open = Path.open

    def full_disk(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        handle = real_open(self, mode, *args, **kwargs)  # type: ignore[arg-type]
        if "w" in mode and self.suffix == ".part":

            def write(data: bytes) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

            handle.write = write  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(Path, "open", full_disk)
    plain = datasets.DATASETS["toy"].files[1]
    with pytest.raises(OSError, match=rf"cannot write \.plain\.txt\.\w+\.part into {re.escape(str(folder))}: No space"):
        datasets.fetch_file(plain, folder / "plain.txt")
    assert list(folder.iterdir()) == []  # the stale part file and this one's are gone


def test_a_full_disk_while_decompressing_names_the_file_and_leaves_no_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "images.gz"
    source.write_bytes(gzip.compress(CONTENT))
    target = tmp_path / "raw" / "images"
    target.parent.mkdir()
    (target.parent / ".images.k3j2.part").write_bytes(b"left by a kill -9")

    def full(source_file: object, destination: object, length: int = 0) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.shutil, "copyfileobj", full)
    with pytest.raises(OSError, match=rf"cannot write {re.escape(str(target))}: No space left on device"):
        datasets._decompress_once(source, target, None)
    assert list(target.parent.iterdir()) == []
