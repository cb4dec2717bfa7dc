r"""English–French sentence pairs, character vocabularies, a split by English sentence, bucketed batches.

**The file.** ``eng-fra/eng-fra.txt``: UTF-8, one pair per line, ``English<TAB>French`` and
optionally a third column (the attribution of newer Tatoeba/manythings exports), which is
ignored. It is looked for, in this order, as

1. ``pairs_path`` when given (any well-formed file, not checksummed: the ``--pairs PATH`` flag);
2. ``<dir>/eng-fra/eng-fra.txt`` in :func:`scratch_engine.tools.datasets.search_dirs` (``data_dir``
   or ``$SCRATCH_DATA_DIR``, then the cache). That is the project's known file (76,037 pairs,
   the shortest part of manythings' ``fra.txt``, the engine's ``eng-fra`` data set) and it must
   match its SHA-256;
3. ``<dir>/eng-fra/eng-fra-tutorial.txt``, a file this module downloaded earlier, used only while it
   matches the SHA-256 recorded beside it at download (``eng-fra-tutorial.txt.sha256``): a file put
   there by hand, or changed since, is a ``ChecksumError`` (pass it with ``--pairs`` to use it knowingly);
4. only when downloads are allowed (:func:`scratch_engine.tools.datasets.downloads_allowed`: not
   ``download=False`` nor ``SCRATCH_DOWNLOAD=0``), a download of the known file into the cache
   (what ``python -m scratch_engine.tools.datasets fetch eng-fra`` does: from a copy pinned by commit,
   kept only if its SHA-256 holds); should that fail, a download of the PyTorch tutorial's copy
   of the same Tatoeba-derived pairs (``data/eng-fra.txt`` inside :data:`TUTORIAL_URL`, about
   135k pairs) into ``<cache>/eng-fra/eng-fra-tutorial.txt``, with a warning: no checksum is
   published for it, so it is only checked for format, and it is a *different, larger* data set
   than the known file, whose results are not comparable.

**Normalisation.** Each column is put in Unicode NFC and every run of whitespace becomes one
plain space, stripped at both ends. French typography puts a narrow no-break space (U+202F;
sometimes a thin space U+2009) before ``! ? : ;``, but the file mixes them with plain spaces
(``Va !`` and ``Cours\u202f!``): normalised, the two spellings are one, the model need not
guess an invisible character, and the character error rate does not count one.

**Splits.** A pair belongs to ``"test"``, ``"val"`` or ``"train"`` by a hash of its English
sentence (:func:`split_of`: CRC-32 of the UTF-8 text), so every translation of one English
sentence falls in the same split, and the split is the same on every run and under any length
filter. :meth:`EngFra.references` lists all French translations of each English sentence, to
evaluate against all of them.

**Batches.** :class:`BucketBatches` yields ``((src_ids, tgt_in), tgt_out)``, the ``(x, y)``
shape the engine's ``Engine`` trains on: the engine calls ``model(x)`` and ``loss(output, y)``.
``Transformer.forward`` takes ``(src_ids, tgt_ids, src_mask)`` separately, so the training step
wraps it in :class:`scratch_transformer.translator.Translator` (``model(src, tgt_in, padding_mask(src, PAD))``).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
import tempfile
import unicodedata
import urllib.request
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratch_engine.data import EpochBatches
from scratch_engine.tools.datasets import (
    DATASETS,
    ChecksumError,
    DataNotFoundError,
    cache_dir,
    downloads_allowed,
    fetch_file,
    file_digest,
    locate,
    search_dirs,
)
from scratch_engine.tools.distributed import shard
from scratch_engine.tools.files import write_text_atomic
from scratch_engine.tools.text import Vocabulary as CharacterVocabulary

DATASET = "eng-fra"
FILE = "eng-fra.txt"
NUM_PAIRS = 76_037  # in the known file
TUTORIAL_URL = "https://download.pytorch.org/tutorial/data.zip"
TUTORIAL_FILE = "eng-fra-tutorial.txt"
SPLITS = ("train", "val", "test")

Pair = tuple[str, str]  # (English, French)

# --------------------------------------------------------------------------- the file


def locate_pairs(data_dir: str | Path | None = None, download: bool | None = None) -> Path:
    """The pairs file, searched as the module docs describe (steps 2 to 4); downloads only if allowed."""
    try:  # the known file, checksum verified (ChecksumError: pass another file as pairs_path instead)
        return locate(DATASET, data_dir, download=False) / FILE
    except DataNotFoundError:
        pass
    dirs = search_dirs(data_dir)
    for folder in dirs:
        if (tutorial := folder / DATASET / TUTORIAL_FILE).is_file():
            return _checked_tutorial(tutorial)
    looked = " and ".join(str(folder / DATASET / FILE) for folder in dirs)
    if not downloads_allowed(download):
        raise DataNotFoundError(
            f"English-French pairs not found in {looked} (downloads are off); get them with "
            f"`python -m scratch_engine.tools.datasets fetch {DATASET}` when online, or set SCRATCH_DATA_DIR to a "
            f"folder holding {DATASET}/{FILE}, or pass --pairs PATH"
        )
    try:
        return fetch_file(DATASETS[DATASET].files[0], cache_dir() / DATASET / FILE)
    except OSError as err:
        known_failed = err
    try:
        tutorial = download_pairs(TUTORIAL_URL, cache_dir() / DATASET / TUTORIAL_FILE)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataNotFoundError(
            f"English-French pairs not found in {looked}, and neither download worked: {known_failed}; "
            f"{TUTORIAL_URL}: {err}"
        ) from None
    print(
        f"warning: the project's {FILE} could not be downloaded ({known_failed}); using the PyTorch tutorial's "
        f"pairs instead ({tutorial}), a different, larger data set: figures are not comparable to the README's",
        file=sys.stderr,
    )
    return tutorial


def _checked_tutorial(path: Path) -> Path:
    """``path`` if it matches the digest :func:`download_pairs` recorded beside it, else a ``ChecksumError``."""
    record = path.with_name(path.name + ".sha256")
    recorded = record.read_text(encoding="utf-8").strip() if record.is_file() else None
    if recorded is None or recorded != file_digest(path):
        why = "has no digest recorded beside it" if recorded is None else "changed since it was downloaded"
        raise ChecksumError(
            f"{path} {why} ({record.name}): it is not the tutorial copy this module fetched; delete it, or pass "
            "it with --pairs to train on it knowingly"
        )
    return path


def download_pairs(url: str, destination: Path) -> Path:
    """Fetch a zip holding ``.../eng-fra.txt``, check its format and write it to ``destination`` atomically,
    with its SHA-256 beside it (``<destination>.sha256``): no digest is published for it, so this one records
    what was fetched, and a later change of the file is caught."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    os.close(handle)
    partial = Path(temporary)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "scratch-transformer"})
        with urllib.request.urlopen(request, timeout=60) as response, partial.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        with zipfile.ZipFile(partial) as archive:
            members = [name for name in archive.namelist() if name.endswith("/" + FILE) or name == FILE]
            if not members:
                raise ValueError(f"{url} holds no {FILE}")
            content = archive.read(members[0])
        partial.write_bytes(content)
        read_pairs(partial)  # ValueError naming the line if it is not a pairs file
        write_text_atomic(destination.with_name(destination.name + ".sha256"), hashlib.sha256(content).hexdigest())
        os.replace(partial, destination)
        return destination
    finally:
        partial.unlink(missing_ok=True)


_WHITESPACE = re.compile(r"\s+")  # str patterns match Unicode whitespace: U+202F, U+2009, U+00A0, ...


def normalize(text: str) -> str:
    """NFC, every whitespace run (narrow no-break spaces included) -> one plain space, stripped."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def read_pairs(path: str | Path) -> list[Pair]:
    """Every ``(English, French)`` pair of a 2- or 3-column UTF-8 file, normalised, in file order.

    Empty lines are skipped; anything else malformed (invalid UTF-8, another number of columns,
    an empty sentence) is a ``ValueError`` naming the file and the line number.
    """
    path = Path(path)
    pairs = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}, line {number}: not UTF-8 ({err.reason} at byte {err.start})") from None
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not line:
            continue
        columns = line.split("\t")
        if len(columns) not in (2, 3):
            raise ValueError(
                f"{path}, line {number}: expected 2 or 3 tab-separated columns (English, French[, attribution]), "
                f"got {len(columns)}: {line[:80]!r}"
            )
        english, french = normalize(columns[0]), normalize(columns[1])
        if not english or not french:
            raise ValueError(f"{path}, line {number}: empty {'English' if not english else 'French'} sentence")
        pairs.append((english, french))
    if not pairs:
        raise ValueError(f"{path} holds no sentence pairs")
    return pairs


def split_of(english: str, val_fraction: float = 0.05, test_fraction: float = 0.1) -> str:
    r"""``"test"``, ``"val"`` or ``"train"`` from :math:`u = \text{crc32}(\text{english}) / 2^{32} \in [0, 1)`.

    ``u < test_fraction``: test; ``u < test_fraction + val_fraction``: val; else train. A pure
    function of the sentence: stable across runs, machines and filters.
    """
    u = zlib.crc32(english.encode("utf-8")) / 2**32
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


# --------------------------------------------------------------------------- vocabulary


class Vocabulary(CharacterVocabulary):
    """The engine's character :class:`~scratch_engine.tools.text.Vocabulary` with the translator's four specials.

    ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, then the characters. :meth:`build` collects
    the characters of some texts (the training split only: characters seen nowhere else are read
    as ``<unk>`` and counted in ``unknown``), sorted so that the ids do not depend on the text
    order. ``ids(text)`` is a list, ``encode(text)`` a tensor; ``decode``, ``to_dict`` /
    ``from_dict`` (plain lists, for a ``weights_only`` checkpoint) are the engine's. Only the
    specials are fixed here: a vocabulary saved with other specials is a ``ValueError``.
    """

    SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
    PAD, BOS, EOS, UNK = range(len(SPECIALS))

    def __init__(self, chars: Iterable[str], specials: Sequence[str] = SPECIALS) -> None:
        if tuple(specials) != self.SPECIALS:
            raise ValueError(f"a translation Vocabulary has the specials {list(self.SPECIALS)}, got {list(specials)}")
        super().__init__(chars, self.SPECIALS)

    @classmethod
    def build(cls, texts: Iterable[str], specials: Sequence[str] = SPECIALS) -> Vocabulary:
        """The sorted characters of ``texts``, after the four specials."""
        return super().build(texts, specials)


# --------------------------------------------------------------------------- the data set


class EngFra:
    """The pairs, filtered by length and split by English sentence, with vocabularies from ``train``.

    ``EngFra(pairs)`` takes ``(English, French)`` pairs; :meth:`load` reads them from the file.
    Pairs longer than ``max_src_len`` English or ``max_tgt_len`` French characters are dropped
    (``None``: no limit). ``src_vocab`` and ``tgt_vocab`` are built from the training split,
    unless given (e.g. from a checkpoint, :meth:`Vocabulary.from_dict`).
    ``pairs[split]`` holds each split's pairs in file order.
    """

    def __init__(
        self,
        pairs: Iterable[Pair],
        *,
        max_src_len: int | None = None,
        max_tgt_len: int | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.1,
        src_vocab: Vocabulary | None = None,
        tgt_vocab: Vocabulary | None = None,
    ) -> None:
        if min(val_fraction, test_fraction) < 0 or val_fraction + test_fraction >= 1:
            raise ValueError(
                f"val_fraction and test_fraction must be >= 0 with a sum below 1, "
                f"got {val_fraction} and {test_fraction}"
            )
        for name, limit in (("max_src_len", max_src_len), ("max_tgt_len", max_tgt_len)):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be a positive number of characters or None, got {limit}")
        self.pairs: dict[str, list[Pair]] = {split: [] for split in SPLITS}
        self.source: dict[str, Any] = {}  # the file the pairs came from (EngFra.load): its path and SHA-256
        self.filtered_out = 0
        for english, french in pairs:
            if (max_src_len is not None and len(english) > max_src_len) or (
                max_tgt_len is not None and len(french) > max_tgt_len
            ):
                self.filtered_out += 1
                continue
            self.pairs[split_of(english, val_fraction, test_fraction)].append((english, french))
        if not self.pairs["train"]:
            raise ValueError("no training pairs left after filtering by length")
        train = self.pairs["train"]
        self.src_vocab = Vocabulary.build(e for e, _ in train) if src_vocab is None else src_vocab
        self.tgt_vocab = Vocabulary.build(f for _, f in train) if tgt_vocab is None else tgt_vocab

    @classmethod
    def load(
        cls,
        pairs_path: str | Path | None = None,
        *,
        data_dir: str | Path | None = None,
        download: bool | None = None,
        **kwargs: Any,
    ) -> EngFra:
        """Read ``pairs_path``, else the located file (:func:`locate_pairs`); ``kwargs`` go to ``EngFra``."""
        path = Path(pairs_path) if pairs_path is not None else locate_pairs(data_dir, download)
        pairs = read_pairs(path)
        try:
            data = cls(pairs, **kwargs)
        except ValueError as error:  # e.g. no training pairs: say which file
            raise ValueError(f"{path}: {error}") from None
        data.source = {"file": str(path), "sha256": file_digest(path), "pairs": len(pairs)}  # what a run records
        return data

    def split(self, name: str) -> list[Pair]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return self.pairs[name]

    def references(self, name: str) -> dict[str, list[str]]:
        """English sentence -> all its distinct French translations in split ``name``, in file order."""
        refs: dict[str, list[str]] = defaultdict(list)
        for english, french in self.split(name):
            if french not in refs[english]:
                refs[english].append(french)
        return dict(refs)

    def loader(
        self, name: str, batch_size: int, *, shuffle: bool | None = None, seed: int | None = None
    ) -> BucketBatches:
        """Length-bucketed batches of split ``name`` (``shuffle`` defaults to ``True`` for train only)."""
        shuffle = name == "train" if shuffle is None else shuffle
        return BucketBatches(self.split(name), self.src_vocab, self.tgt_vocab, batch_size, shuffle=shuffle, seed=seed)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{split} {len(self.pairs[split]):,}" for split in SPLITS)
        return f"EngFra({sizes} pairs; src {self.src_vocab!r}, tgt {self.tgt_vocab!r})"


def load_eng_fra(
    pairs: str | Path | None = None,
    data_dir: str | Path | None = None,
    download: bool | None = None,
    max_src_len: int | None = None,
) -> EngFra:
    """The pairs of a run: ``pairs`` (a file) or the located eng-fra file, English of at most ``max_src_len``.

    Every split must have pairs (training, validation, the test CER): a ``ValueError`` naming the
    file and the empty split says so before any training, not after it. A ``pairs`` file that is
    not there is a :class:`~scratch_engine.tools.datasets.DataNotFoundError`.
    """
    if pairs is not None and not Path(pairs).is_file():
        raise DataNotFoundError(f"no pairs file at {pairs}")
    path = Path(pairs) if pairs is not None else locate_pairs(data_dir, download)
    data = EngFra.load(path, max_src_len=max_src_len)
    sizes = {split: len(data.split(split)) for split in SPLITS}
    empty = [split for split, size in sizes.items() if size == 0]
    if empty:
        counts = ", ".join(f"{split} {size:,}" for split, size in sizes.items())
        dropped = (
            f"; {data.filtered_out:,} longer than --max-src-len {max_src_len} left out" if data.filtered_out else ""
        )
        raise ValueError(
            f"{path}: no {' or '.join(empty)} pairs ({counts}{dropped}). Pairs are split 85/5/10 by a hash of the "
            "English sentence: the file needs more distinct English sentences"
        )
    return data


# --------------------------------------------------------------------------- batches


class BucketBatches(EpochBatches):
    """Batches of pairs of similar length, padded with ``<pad>``; every pair exactly once per epoch.

    Each item is ``((src_ids, tgt_in), tgt_out)``, all ``long``: ``src_ids (B, S)`` the English
    characters, ``tgt_in (B, T)`` = ``<bos>`` + French, ``tgt_out (B, T)`` = French + ``<eos>``
    (the next character at every position), each padded at the end to its batch's longest row.

    The order of epoch ``e`` is a pure function of ``(seed, e)`` (a ``torch.Generator`` seeded
    with ``seed + e``, as in the engine's ``DataLoader``): shuffle the pairs, cut them into chunks
    of ``batch_size * chunk_batches``, sort each chunk by (source, target) length, cut it into
    batches, then shuffle the order of all batches. Sorting within a chunk keeps the padding
    small; the chunks and the batch shuffle keep batches varied from epoch to epoch. Without
    ``shuffle`` the whole split is sorted by length, in one fixed order. Each new iteration moves
    to the next epoch; :meth:`set_epoch` chooses one, and the batch to start from (the ``Engine``
    calls it before every epoch, to resume in the middle of one too). ``len`` is the number of
    batches, one pass over the pairs. With ``seed=None`` a shuffling loader draws its seed from
    torch's global generator; an unshuffled one draws nothing (so building it leaves the next
    dropout masks alone).

    Data-parallel (``world_size > 1``; by default the rank and world size of torch.distributed's
    process group, :func:`scratch_engine.tools.distributed.shard`): ``batch_size`` is per rank, the batches are
    those of a single process with ``batch_size * world_size``, and rank ``r`` takes the ``r``-th of
    ``world_size`` near-equal parts of each (possibly none of a short last batch). A
    sharded, shuffled loader needs the same ``seed`` on every rank.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        src_vocab: Vocabulary,
        tgt_vocab: Vocabulary,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        chunk_batches: int = 100,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if int(batch_size) < 1 or int(chunk_batches) < 1:
            raise ValueError(f"batch_size and chunk_batches must be at least 1, got {batch_size} and {chunk_batches}")
        if not pairs:
            raise ValueError("BucketBatches needs at least one pair")
        self.src = [src_vocab.ids(english) for english, _ in pairs]
        self.tgt = [tgt_vocab.ids(french) for _, french in pairs]
        self.batch_size = int(batch_size)
        self.chunk_batches = int(chunk_batches)
        self.shuffle = shuffle
        self.rank, self.world_size = shard(rank, world_size, seed, shuffle)
        if seed is None:  # shuffle=False ignores the seed: drawing one would shift the global RNG
            seed = int(torch.randint(0, 2**62, ()).item()) if shuffle else 0
        self.seed = int(seed)

    @property
    def global_batch_size(self) -> int:
        """Pairs per step over all ranks: ``batch_size * world_size``."""
        return self.batch_size * self.world_size

    def __len__(self) -> int:  # every chunk but the last is a whole number of batches
        return math.ceil(len(self.src) / self.global_batch_size)

    def batches(self, epoch: int) -> list[list[int]]:
        """The pair indices of each of this rank's batches of ``epoch``, in the order they are served."""
        if self.world_size == 1:
            return self._global_batches(epoch)
        shards = []
        for batch in self._global_batches(epoch):  # the r-th of world_size near-equal parts, cut as tensor_split cuts
            size, extra = divmod(len(batch), self.world_size)
            start = self.rank * size + min(self.rank, extra)
            shards.append(batch[start : start + size + (self.rank < extra)])
        return shards

    def _global_batches(self, epoch: int) -> list[list[int]]:
        size = self.global_batch_size

        def length(i: int) -> tuple[int, int]:
            return len(self.src[i]), len(self.tgt[i])

        if not self.shuffle:
            order = sorted(range(len(self.src)), key=length)
            return [order[k : k + size] for k in range(0, len(order), size)]
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.src), generator=generator, device="cpu").tolist()
        chunk = size * self.chunk_batches
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=length)
            batches += [part[k : k + size] for k in range(0, len(part), size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator, device="cpu").tolist()]

    def collate(self, indices: Sequence[int]) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """``((src_ids, tgt_in), tgt_out)`` of the pairs ``indices``, padded with ``<pad>``."""
        pad, bos, eos = Vocabulary.PAD, Vocabulary.BOS, Vocabulary.EOS
        if not indices:  # this rank's share of a short last batch: no rows (the engine skips it)
            empty = torch.zeros(0, 1, dtype=torch.long)
            return (empty, empty.clone()), empty.clone()
        src_len = max(len(self.src[i]) for i in indices)
        tgt_len = max(len(self.tgt[i]) for i in indices) + 1
        src = [self.src[i] + [pad] * (src_len - len(self.src[i])) for i in indices]
        tgt_in = [[bos, *self.tgt[i]] + [pad] * (tgt_len - 1 - len(self.tgt[i])) for i in indices]
        tgt_out = [[*self.tgt[i], eos] + [pad] * (tgt_len - 1 - len(self.tgt[i])) for i in indices]
        return (torch.tensor(src), torch.tensor(tgt_in)), torch.tensor(tgt_out)

    def __iter__(self) -> Iterator[tuple[tuple[Tensor, Tensor], Tensor]]:
        epoch, start = self.next_epoch()
        for indices in self.batches(epoch)[start:]:
            yield self.collate(indices)

    def __repr__(self) -> str:
        return (
            f"BucketBatches(pairs={len(self.src)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, epoch={self.epoch})"
        )
