"""English-French data: the real file (SCRATCH_DATA_DIR), the split, the vocabulary, the batches; malformed files."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import Tensor

from scratch_engine import CrossEntropyLoss, Engine, GradientDescent
from scratch_engine.tools import datasets
from scratch_engine.tools.datasets import ChecksumError, DataNotFoundError, DataSet
from scratch_engine.tools.testing import require_data_dir
from scratch_transformer import Transformer
from scratch_transformer import data as data_module
from scratch_transformer.data import (
    NUM_PAIRS,
    SPLITS,
    EngFra,
    Vocabulary,
    download_pairs,
    locate_pairs,
    normalize,
    read_pairs,
    split_of,
)
from scratch_transformer.translator import Translator


@pytest.fixture(scope="module")
def pairs_file() -> Path:
    return require_data_dir("eng-fra") / "eng-fra" / "eng-fra.txt"  # fails loudly without SCRATCH_DATA_DIR


@pytest.fixture(scope="module")
def pairs(pairs_file: Path) -> list[tuple[str, str]]:
    return read_pairs(pairs_file)


@pytest.fixture(scope="module")
def data(pairs: list[tuple[str, str]]) -> EngFra:
    return EngFra(pairs)


# --------------------------------------------------------------------------- the real file


def test_the_known_file_is_found_and_parsed(pairs_file: Path, pairs: list[tuple[str, str]]) -> None:
    assert locate_pairs(pairs_file.parent.parent, download=False) == pairs_file  # checksum verified
    assert len(pairs) == NUM_PAIRS == 76_037
    assert pairs[0] == ("Go.", "Va !")
    assert pairs[1] == ("Run!", "Cours !")  # U+202F in the file, a plain space here
    assert not any(char.isspace() and char != " " for english, french in pairs for char in english + french)
    assert len({english for english, _ in pairs}) == 49_197


def test_split_by_english_sentence(data: EngFra) -> None:
    assert sum(len(data.split(name)) for name in SPLITS) == NUM_PAIRS
    english = {name: {e for e, _ in data.split(name)} for name in SPLITS}
    assert not english["train"] & english["val"]
    assert not english["train"] & english["test"]
    assert not english["val"] & english["test"]
    distinct = sum(len(sentences) for sentences in english.values())
    assert len(english["test"]) / distinct == pytest.approx(0.10, abs=0.01)
    assert len(english["val"]) / distinct == pytest.approx(0.05, abs=0.01)


def test_split_is_deterministic_and_independent_of_filters(pairs: list[tuple[str, str]], data: EngFra) -> None:
    assert split_of("Go.") == "train"  # pinned: CRC-32 of the UTF-8 text, the same on every run
    assert split_of("Thank you.") == "test"
    short = EngFra(pairs, max_src_len=12, max_tgt_len=20)
    assert short.filtered_out > 0
    for name in SPLITS:
        kept = short.split(name)
        assert all(len(e) <= 12 and len(f) <= 20 for e, f in kept)
        assert set(kept) <= set(data.split(name))  # filtering never moves a pair to another split
    assert EngFra(pairs).split("test") == data.split("test")


def test_references_hold_every_translation(pairs: list[tuple[str, str]], data: EngFra) -> None:
    translations: dict[str, list[str]] = defaultdict(list)
    for english, french in pairs:
        if french not in translations[english]:
            translations[english].append(french)
    for name in SPLITS:
        references = data.references(name)
        assert references == {e: translations[e] for e in references}
        assert set(references) == {e for e, _ in data.split(name)}
    assert data.references("test")["Thank you."] == ["Merci !"]
    assert max(len(refs) for refs in data.references("test").values()) > 3
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        data.references("dev")


def test_vocabulary_from_training_split(data: EngFra) -> None:
    for vocab, column in ((data.src_vocab, 0), (data.tgt_vocab, 1)):
        assert [vocab.decode([i], keep_specials=True) for i in range(4)] == ["<pad>", "<bos>", "<eos>", "<unk>"]
        assert (Vocabulary.PAD, Vocabulary.BOS, Vocabulary.EOS, Vocabulary.UNK) == (0, 1, 2, 3)
        train_chars = {char for pair in data.split("train") for char in pair[column]}
        assert set(vocab.chars) == train_chars
        assert vocab.chars == sorted(vocab.chars)
    assert len(data.src_vocab) == 4 + 77
    assert len(data.tgt_vocab) == 4 + 99
    assert "\u202f" not in data.tgt_vocab.chars


def test_encode_decode_round_trip(data: EngFra) -> None:
    vocab = Vocabulary.from_dict(data.tgt_vocab.to_dict())
    for _, french in data.split("val"):
        ids = vocab.ids(french, bos=True, eos=True)
        assert ids[0] == Vocabulary.BOS
        assert ids[-1] == Vocabulary.EOS
        expected = "".join(char if char in vocab.index else Vocabulary.UNK_CHAR for char in french)
        assert vocab.decode(ids + [Vocabulary.PAD] * 3) == expected
    unknown = Counter(char for _, french in data.split("val") for char in french if char not in vocab.index)
    assert vocab.unknown == unknown  # counted, not silently dropped


def test_vocabulary_is_saved_as_plain_data(data: EngFra, tmp_path: Path) -> None:
    state = {"src_vocab": data.src_vocab.to_dict(), "tgt_vocab": data.tgt_vocab.to_dict()}
    torch.save(state, tmp_path / "vocab.pt")
    loaded = torch.load(tmp_path / "vocab.pt", weights_only=True)
    vocab = Vocabulary.from_dict(loaded["tgt_vocab"])
    assert vocab.chars == data.tgt_vocab.chars
    assert vocab.ids("Ça va ?") == data.tgt_vocab.ids("Ça va ?")
    assert torch.equal(vocab.encode("Ça va ?"), torch.tensor(vocab.ids("Ça va ?")))  # the engine's: a tensor
    with pytest.raises(ValueError, match="specials"):
        Vocabulary.from_dict({"specials": ["<unk>"], "chars": ["a"]})
    with pytest.raises(ValueError, match=r"unique, got \['a'\]"):
        Vocabulary(["a", "b", "a"])
    with pytest.raises(ValueError, match="token id 999 is out of range for a vocabulary of 103"):
        data.tgt_vocab.decode([5, 999])


def _served(batches: list[tuple[tuple[Tensor, Tensor], Tensor]]) -> list[tuple[list[int], list[int]]]:
    """The (source ids, target ids) rows of some batches, in the order served."""
    return [(s, o) for (src, _), tgt_out in batches for s, o in zip(src.tolist(), tgt_out.tolist(), strict=True)]


def test_bucketed_batches_serve_every_pair_once(data: EngFra) -> None:
    loader = data.loader("train", batch_size=64, seed=0)
    n = len(data.split("train"))
    assert len(loader) == -(-n // 64)
    for epoch in range(2):
        indices = [i for batch in loader.batches(epoch) for i in batch]
        assert sorted(indices) == list(range(n))
    spread = [max(len(loader.src[i]) for i in b) - min(len(loader.src[i]) for i in b) for b in loader.batches(0)]
    assert sum(spread) / len(spread) < 1.0  # sorted within chunks: little padding
    assert max(spread) <= 10


def test_batch_tensors(data: EngFra) -> None:
    loader = data.loader("val", batch_size=16)
    assert not loader.shuffle  # val and test: one fixed order, sorted by length
    batches = list(loader)
    assert len(batches) == len(loader)
    (src, tgt_in), tgt_out = batches[3]
    assert src.dtype == tgt_in.dtype == tgt_out.dtype == torch.long
    assert tgt_in.shape == tgt_out.shape
    assert src.shape[0] == tgt_in.shape[0] == 16
    assert (tgt_in[:, 0] == Vocabulary.BOS).all()
    lengths = (tgt_out != Vocabulary.PAD).sum(dim=1)
    assert (tgt_out.gather(1, (lengths - 1)[:, None]) == Vocabulary.EOS).all()  # French + <eos>, then padding
    assert (src[:, -1] != Vocabulary.PAD).any()  # padded to the longest row, no further
    pairs = set(data.split("val"))
    for s, i, o in zip(src.tolist(), tgt_in.tolist(), tgt_out.tolist(), strict=True):
        assert data.tgt_vocab.decode(i) == data.tgt_vocab.decode(o)  # the same French, shifted by one
        assert (data.src_vocab.decode(s), data.tgt_vocab.decode(o)) in pairs


def test_batches_are_reproducible_with_a_seed(data: EngFra) -> None:
    a, b = data.loader("val", 32, shuffle=True, seed=7), data.loader("val", 32, shuffle=True, seed=7)
    first, second = list(a), list(a)  # each iteration is the next epoch
    assert a.epoch == 1
    assert _served(list(b)) == _served(first)
    assert _served(second) != _served(first)
    b.set_epoch(1)
    assert _served(list(b)) == _served(second)
    b.set_epoch(1, start=2)  # a run resumed in the middle of epoch 1: the batches it had not trained on
    batches = list(b)
    assert len(batches) == len(b) - 2
    assert _served(batches) == _served(second[2:])
    assert _served(list(b)) == _served(list(a))  # then epoch 2 from its start, as an uninterrupted loader
    assert _served(list(data.loader("val", 32, shuffle=True, seed=8))) != _served(first)


def test_an_unshuffled_loader_leaves_the_random_numbers_alone(data: EngFra) -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    data.loader("val", 32)  # no seed to draw: its order is fixed
    assert torch.equal(torch.rand(3), expected)  # the next dropout masks are the same with or without it


def test_the_engine_trains_on_the_batches(pairs: list[tuple[str, str]]) -> None:
    data = EngFra(pairs[:400])
    torch.manual_seed(0)
    model = Translator(Transformer(len(data.src_vocab), len(data.tgt_vocab), 16, 2, 1, 1, 32, 0.0, 64))
    loss = CrossEntropyLoss(ignore_index=Vocabulary.PAD)
    engine = Engine(model, loss, GradientDescent(model, learning_rate=0.05), progress=False)
    history = engine.fit(data.loader("train", 64, seed=0), epochs=2, val_loader=data.loader("val", 64))
    assert history["loss"][-1] < history["loss"][0]
    assert all(torch.isfinite(torch.tensor(history["val_loss"])))


# --------------------------------------------------------------------------- synthetic files


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_three_columns_crlf_and_blank_lines(tmp_path: Path) -> None:
    text = (
        "Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272 (CM) & #1158250 (Wittydev)\r\n"
        "Run!\tCours\u202f!\r\n"
        "\n"
        "Hi.  \t  Salut\u00a0!\tattribution\n"
    )
    path = _write(tmp_path / "pairs.txt", text)
    assert read_pairs(path) == [("Go.", "Va !"), ("Run!", "Cours !"), ("Hi.", "Salut !")]
    assert normalize("e\u0301t\u00e9") == "été"  # NFC: a decomposed é is one character


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "Go.\tVa !\nRun!\tCours !\nno tab here\n",
            r"pairs\.txt, line 3: expected 2 or 3 tab-separated columns .* got 1",
        ),
        ("Go.\tVa !\ta\tb\n", r"line 1: expected 2 or 3 .* got 4"),
        ("Go.\tVa !\nHi.\t \n", r"line 2: empty French sentence"),
        (b"Go.\tVa !\nCaf\xe9\tCaf\xe9\n", r"line 2: not UTF-8"),
        ("\n\n", r"holds no sentence pairs"),
    ],
)
def test_malformed_lines_are_value_errors(tmp_path: Path, content: str | bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_pairs(_write(tmp_path / "pairs.txt", content))


def test_any_well_formed_file_given_explicitly(tmp_path: Path) -> None:
    lines = [f"Sentence {i}.\tPhrase {i}." for i in range(200)]
    path = _write(tmp_path / "mine.txt", "\n".join(lines))
    data = EngFra.load(path, max_src_len=12)
    assert sum(len(data.split(name)) for name in SPLITS) + data.filtered_out == 200
    assert data.filtered_out == 100  # "Sentence 10." and longer


def test_file_search_verifies_the_known_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRATCH_CACHE_DIR", str(tmp_path / "cache"))
    data_dir = tmp_path / "data"
    with pytest.raises(DataNotFoundError, match=r"eng-fra/eng-fra\.txt \(downloads are off\).*--pairs PATH"):
        locate_pairs(data_dir, download=False)
    other = _write(data_dir / "eng-fra" / "eng-fra.txt", "Go.\tVa !\n")  # well formed, but not the known file
    with pytest.raises(ChecksumError, match="SHA-256"):
        locate_pairs(data_dir, download=False)
    assert EngFra.load(other, val_fraction=0.0, test_fraction=0.0).split("train") == [("Go.", "Va !")]
    other.unlink()
    tutorial = _write(tmp_path / "cache" / "eng-fra" / "eng-fra-tutorial.txt", "Go.\tVa !\n")  # put there by hand
    with pytest.raises(ChecksumError, match=r"eng-fra-tutorial\.txt has no digest recorded beside it .*--pairs"):
        locate_pairs(data_dir, download=False)
    served = _zip(tmp_path / "data.zip", "data/eng-fra.txt", "Go.\tVa !\n")
    assert download_pairs(served.as_uri(), tutorial) == tutorial  # downloaded: its digest is recorded
    assert locate_pairs(data_dir, download=False) == tutorial
    data = EngFra.load(tutorial, val_fraction=0.0, test_fraction=0.0)
    assert data.source == {"file": str(tutorial), "sha256": hashlib.sha256(b"Go.\tVa !\n").hexdigest(), "pairs": 1}
    _write(tutorial, "Go.\tVa-t'en !\n")  # changed since: refused, not used unchecked (#18)
    with pytest.raises(ChecksumError, match=r"eng-fra-tutorial\.txt changed since it was downloaded"):
        locate_pairs(data_dir, download=False)


def test_download_fetches_the_known_file_else_the_tutorial_copy_with_a_warning(
    pairs_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both 'servers' are local files reached by file:// URLs: no network in tests."""
    monkeypatch.setenv("SCRATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SCRATCH_DATA_DIR", raising=False)
    cut_line = b"My wisdom teeth are coming in.\tMes dents "  # how the pinned copy ends
    source = _write(tmp_path / "server" / "fra.txt", pairs_file.read_bytes() + cut_line)
    known = datasets.DATASETS["eng-fra"].files[0]
    monkeypatch.setitem(
        datasets.DATASETS, "eng-fra", DataSet("eng-fra", (replace(known, urls=(source.as_uri(),)),), "test")
    )
    tutorial_zip = _zip(tmp_path / "data.zip", "data/eng-fra.txt", "Go.\tVa !\n")
    monkeypatch.setattr(data_module, "TUTORIAL_URL", tutorial_zip.as_uri())
    cached = locate_pairs(download=True)  # the cut source, truncated to its complete lines, checksum verified
    assert cached == tmp_path / "cache" / "eng-fra" / "eng-fra.txt"
    assert cached.read_bytes() == pairs_file.read_bytes()
    assert capsys.readouterr().err == f"downloading {source.as_uri()}\n"  # said before connecting, nothing else
    cached.unlink()
    source.write_bytes(b"Go.\tVa !\n" * 500_000)  # another file at the pinned address: rejected
    tutorial = locate_pairs(download=True)
    assert tutorial == tmp_path / "cache" / "eng-fra" / "eng-fra-tutorial.txt"
    assert read_pairs(tutorial) == [("Go.", "Va !")]
    warning = capsys.readouterr().err
    assert "SHA-256" in warning
    assert "a different, larger data set" in warning
    assert not cached.exists()


def _zip(path: Path, member: str, text: str) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, text)
    return _write(path, buffer.getvalue())


def test_download_extracts_and_validates(tmp_path: Path) -> None:
    """The tutorial zip, served from a file:// URL: no network in tests."""
    good = _zip(tmp_path / "data.zip", "data/eng-fra.txt", "Go.\tVa !\nRun!\tCours\u202f!\n")
    target = tmp_path / "cache" / "eng-fra" / "eng-fra-tutorial.txt"
    assert download_pairs(good.as_uri(), target) == target
    assert read_pairs(target) == [("Go.", "Va !"), ("Run!", "Cours !")]
    bad = _zip(tmp_path / "bad.zip", "data/eng-fra.txt", "Go. Va !\n")
    with pytest.raises(ValueError, match="line 1: expected 2 or 3"):
        download_pairs(bad.as_uri(), tmp_path / "other" / "eng-fra-tutorial.txt")
    assert list((tmp_path / "other").iterdir()) == []  # nothing half-written is left behind
    wrong = _zip(tmp_path / "wrong.zip", "data/deu.txt", "Go.\tGeh.\n")
    with pytest.raises(ValueError, match=r"holds no eng-fra\.txt"):
        download_pairs(wrong.as_uri(), tmp_path / "other" / "eng-fra-tutorial.txt")
