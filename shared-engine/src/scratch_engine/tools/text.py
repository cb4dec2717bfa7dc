"""Text for the character-level models: one :class:`Vocabulary`, the Tiny Shakespeare corpus and its split,
the draw of the next character (:func:`next_token`: temperature, top-k) every sampler uses, and the sample
printed at each validation (:class:`RowSample`).

The RNN's language model and the Transformer's translator both read characters: a vocabulary maps
each character to an integer id, after the special tokens a model needs (``<pad>``, ``<bos>``...).
Tiny Shakespeare is split once, the same way for every model that reads it (:func:`split_text`),
so their validation losses in nats per character are measured on the very same text.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from scratch_engine.engine import Callback, Engine
from scratch_engine.tools.config import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, TrainConfig, option
from scratch_engine.tools.distributed import is_main_process
from scratch_engine.tools.files import write_text_atomic
from scratch_engine.tools.runner import Loaders, Run, Task

V = TypeVar("V", bound="Vocabulary")


class Vocabulary:
    """Characters <-> integer ids: the ``specials`` first (ids ``0 .. len(specials) - 1``), then ``chars``.

    :meth:`build` collects the characters of some texts, sorted, so that the ids do not depend on
    the order of the text. A character the vocabulary lacks is read as ``<unk>`` when that is
    one of its specials (and counted in :attr:`unknown`), and is a ``ValueError`` otherwise.
    ``to_dict`` / ``from_dict`` use plain lists of strings, so a vocabulary can be saved in a
    checkpoint that ``torch.load(weights_only=True)`` reads.
    """

    UNK_CHAR = "\ufffd"  # how decode writes <unk>: one character, so it costs one edit

    def __init__(self, chars: Iterable[str], specials: Sequence[str] = ()) -> None:
        self.chars, self.specials = list(chars), list(specials)
        for char in self.chars:
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(f"Vocabulary entries must be single characters, got {char!r}")
        if len(set(self.chars)) != len(self.chars):
            repeated = sorted(char for char, n in Counter(self.chars).items() if n > 1)
            raise ValueError(f"Vocabulary characters must be unique, got {repeated} more than once")
        self.index = {char: i for i, char in enumerate(self.chars, len(self.specials))}
        self.unknown: Counter[str] = Counter()

    @classmethod
    def build(cls: type[V], texts: Iterable[str], specials: Sequence[str] = ()) -> V:
        """The sorted characters of ``texts``."""
        chars = sorted(set().union(*map(set, texts)))
        if not chars:
            raise ValueError("cannot build a vocabulary from empty text")
        return cls(chars, specials)

    @classmethod
    def from_text(cls: type[V], text: str) -> V:
        """The sorted characters of one ``text``, without specials."""
        return cls.build([text])

    def __len__(self) -> int:
        return len(self.specials) + len(self.chars)

    def special(self, name: str) -> int:
        """The id of special token ``name`` (``"<pad>"``...)."""
        if name not in self.specials:
            raise ValueError(f"this vocabulary has no {name} token (its specials: {self.specials})")
        return self.specials.index(name)

    def ids(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """The ids of ``text``'s characters, optionally between ``<bos>`` and ``<eos>``."""
        ids = [self.index.get(char, -1) for char in text]
        if -1 in ids:
            missing = [char for char in text if char not in self.index]
            if "<unk>" not in self.specials:
                raise ValueError(f"characters not in the vocabulary: {''.join(sorted(set(missing)))!r}")
            self.unknown.update(missing)
            unk = self.special("<unk>")
            ids = [unk if i < 0 else i for i in ids]
        return ([self.special("<bos>")] if bos else []) + ids + ([self.special("<eos>")] if eos else [])

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> Tensor:
        """:meth:`ids` as an int64 tensor."""
        return torch.tensor(self.ids(text, bos, eos), dtype=torch.int64)

    def decode(self, ids: Sequence[int] | Tensor, keep_specials: bool = False) -> str:
        """The text of ``ids``: it stops at the first ``<eos>``, drops the other specials and writes
        ``<unk>`` as U+FFFD. ``keep_specials=True`` writes every id, the specials by name."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        first = len(self.specials)
        out = []
        for i in values:
            if not 0 <= i < len(self):  # -1 would silently index the last character
                raise ValueError(f"token id {i} is out of range for a vocabulary of {len(self)}")
            if i >= first:
                out.append(self.chars[i - first])
            elif keep_specials:
                out.append(self.specials[i])
            elif self.specials[i] == "<eos>":
                break
            elif self.specials[i] == "<unk>":
                out.append(self.UNK_CHAR)
        return "".join(out)

    def to_dict(self) -> dict[str, list[str]]:
        return {"specials": list(self.specials), "chars": list(self.chars)}

    @classmethod
    def from_dict(cls: type[V], state: Any) -> V:
        if not isinstance(state, dict) or not isinstance(state.get("chars"), list):
            raise ValueError(f"Vocabulary.from_dict expects a dict with a list 'chars', got {state!r:.80}")
        return cls(state["chars"], state.get("specials", []))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and (other.specials, other.chars) == (self.specials, self.chars)

    def __hash__(self) -> int:
        return hash((tuple(self.specials), tuple(self.chars)))

    def __repr__(self) -> str:
        specials = f"{len(self.specials)} specials + " if self.specials else ""
        return f"Vocabulary({len(self)} ids: {specials}{len(self.chars)} characters)"


def split_text(text: str, train_fraction: float = 0.9) -> tuple[str, str]:
    """The fixed split: the first ``train_fraction`` of the text trains, the rest validates."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    cut = int(len(text) * train_fraction)
    return text[:cut], text[cut:]


def read_text(
    path: str | Path | None = None, data_dir: str | Path | None = None, download: bool | None = None
) -> tuple[str, str]:
    """A UTF-8 text and where it came from: the file at ``path``, else Tiny Shakespeare (located and verified)."""
    from scratch_engine.tools.datasets import locate

    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no text file at {path}")
    else:
        path = locate("tinyshakespeare", data_dir, download) / "input.txt"
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); it needs a UTF-8 file"
        ) from error


def check_sampling(temperature: float, top_k: int | None) -> None:
    """Fail before drawing anything (a sampler calls it before its first step): ``temperature`` a finite number
    >= 0, ``top_k`` ``None`` or an integer >= 1."""
    if isinstance(temperature, bool) or not isinstance(temperature, Real):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is None:
        return
    if isinstance(top_k, bool) or not isinstance(top_k, Integral):
        raise TypeError(f"top_k must be an integer or None, got {type(top_k).__name__}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1 (None: no restriction), got {top_k}")


def encode_prompt(vocabulary: Vocabulary, prompt: str, vocab_size: int) -> Tensor:
    """``prompt`` as the ids ``(1, T)`` a character model of ``vocab_size`` characters reads, after the checks every
    sampler makes first: the vocabulary is the model's, the prompt is not empty, and it holds only characters the
    model was trained on."""
    if len(vocabulary) != vocab_size:
        raise ValueError(f"the vocabulary has {len(vocabulary)} characters but the model expects {vocab_size}")
    if not prompt:
        raise ValueError("sampling needs a prompt of at least one character")
    if missing := sorted(set(prompt) - set(vocabulary.chars)):
        raise ValueError(f"the prompt has characters the model was not trained on: {''.join(missing)!r}")
    return vocabulary.encode(prompt).unsqueeze(0)


_NOT_FINITE = "the model's logits are not finite (nan or inf): its weights have diverged"


def next_token(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, generator: torch.Generator | None = None
) -> int:
    r"""Draw one id from ``softmax(logits / temperature)``, restricted to the ``top_k`` largest.

    ``temperature = 0`` is greedy decoding (the argmax); as the temperature tends to 0 the
    distribution concentrates on the argmax, and a large one flattens it. The probabilities are
    computed in float64 on the CPU, wherever the logits are (a GPU divides by a scalar by
    multiplying with its reciprocal, which is inf for a subnormal temperature: 0 * inf = nan);
    the draw then uses ``generator`` on its own device.
    """
    check_sampling(temperature, top_k)
    logits = logits.detach().reshape(-1)
    if temperature == 0:  # the argmax where the logits are, no copy (the float64 ones have the same order)
        index = int(logits.argmax())
        # a NaN or +inf anywhere would be the argmax (torch's argmax takes NaN for the largest): checking that one
        # logit finds it; a -inf elsewhere is a probability of 0, which greedy decoding does not pick anyway
        if not math.isfinite(float(logits[index])):
            raise ValueError(_NOT_FINITE)
        return index
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(_NOT_FINITE)
    logits = logits.double().cpu()
    # Shift by the maximum *before* dividing: every entry is then <= 0 and the largest exactly 0,
    # so a tiny temperature (down to subnormal ones) sends the others to -inf, never the maximum
    # to +inf (which would make inf - inf = nan): it becomes greedy sampling among the maxima.
    shifted = logits - logits.max()
    if top_k is not None:
        k = min(top_k, shifted.numel())
        shifted = shifted.masked_fill(shifted < shifted.topk(k).values[-1], float("-inf"))
    probs = (shifted / temperature).exp()  # the maximum's 1 keeps the sum >= 1
    probs = probs / probs.sum()
    if generator is not None:
        probs = probs.to(generator.device)  # a generator draws on its own device only
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class TextConfig(TrainConfig):
    """The settings of a character-level language model's run besides its model and its batches: the text, the
    samples. ``scratch-rnn`` and ``scratch-transformer`` both build their ``train shakespeare`` config on it."""

    text: str | None = option(None, "train on this UTF-8 text file instead of Tiny Shakespeare", group="data")
    data_dir: str | None = option(
        None, "folder holding tinyshakespeare/input.txt (none: $SCRATCH_DATA_DIR, else the cache)", group="data"
    )
    download: bool = option(
        True, "download a missing Tiny Shakespeare (verified), unless SCRATCH_DOWNLOAD=0", group="data"
    )
    prompt: str = option(
        "ROMEO:", "the end-of-run sample's prompt (a text without its characters: the text's first one)", group="sample"
    )
    sample_length: int = option(
        500, "characters the end-of-run sample generates", check=NON_NEGATIVE_INT, group="sample"
    )
    temperature: float = option(0.8, "the sample's temperature; 0: greedy", check=NON_NEGATIVE, group="sample")
    top_k: int | None = option(
        None, "sample among the K most likely characters only", check=POSITIVE_INT, group="sample"
    )
    row_sample: int = option(
        120,
        "characters sampled and printed at each validation, to watch it learn (0: none)",
        check=NON_NEGATIVE_INT,
        group="sample",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.prompt:  # found now, not by the sample at the end of the run
            raise ValueError("prompt must have at least one character")


@dataclass
class TextData(Loaders):
    """The loaders of one text, its vocabulary, and the sample's prompt."""

    vocabulary: Vocabulary | None = None
    source: str = ""  # where the text came from
    train_characters: int = 0
    val_characters: int = 0
    prompt: str = ""  # config.prompt, or the text's first character where the text lacks one of its characters


def read_splits(config: TextConfig, device: torch.device) -> tuple[Tensor, Tensor, TextData]:
    """The text's training and validation ids on ``device``, and its :class:`TextData` without loaders yet."""
    text, source = read_text(config.text, config.data_dir, None if config.download else False)
    vocabulary = Vocabulary.from_text(text)
    train_text, val_text = split_text(text)
    prompt = config.prompt if set(config.prompt) <= set(vocabulary.chars) else text[0]
    data = TextData(None, None, vocabulary, source, len(train_text), len(val_text), prompt)
    return vocabulary.encode(train_text).to(device), vocabulary.encode(val_text).to(device), data


Sampler = Callable[..., str]  # (model, vocabulary, prompt, length, temperature, top_k, generator) -> the text


class RowSample(Callback):
    """A short sample printed after each validation, to watch a language model learn to spell and to format a play.

    ``sampler(model, vocabulary, prompt, length, temperature, top_k, generator)`` is the package's own
    ``sample``. It runs in the engine's :meth:`~scratch_engine.Engine.inference` (eval mode, no cache, a
    carried state set aside and put back) from a generator of its own, seeded by the step: the run trains
    exactly as it would without it."""

    def __init__(
        self, sampler: Sampler, vocabulary: Vocabulary, prompt: str, length: int, temperature: float, seed: int
    ) -> None:
        self.sampler, self.vocabulary, self.prompt, self.length = sampler, vocabulary, prompt, length
        self.temperature, self.seed = temperature, seed

    def on_log(self, engine: Engine, logs: dict[str, float]) -> None:
        if "val_loss" not in logs:
            return
        generator = torch.Generator().manual_seed(self.seed + engine.global_step)
        with engine.inference():
            text = self.sampler(
                engine.model, self.vocabulary, self.prompt, self.length, self.temperature, None, generator
            )
        shown = text.replace("\n", " / ")
        print(f"sample at step {engine.global_step}: {shown}", file=sys.stderr, flush=True)


def saved_prompt(prompt: Any, vocabulary: Vocabulary) -> str:
    """A checkpoint's recorded prompt where it is text the vocabulary can read, else the vocabulary's first
    character (an older checkpoint may record ``ROMEO:`` for a text without those characters)."""
    usable = isinstance(prompt, str) and prompt and set(prompt) <= set(vocabulary.chars)
    return prompt if usable else vocabulary.chars[0]


TextConfigT = TypeVar("TextConfigT", bound=TextConfig)


class TextTask(Task[TextConfigT]):
    """What a character-level language model's ``train`` task adds to the runner's: a sample printed at each
    validation (:class:`RowSample`), the end-of-run sample (``sample.txt``) and the metrics of the text.

    A package sets ``sampler`` (its ``sample(model, vocabulary, prompt, length, temperature, top_k,
    generator)``, as a ``staticmethod``), says how many characters a step reads, and may add its own metrics.
    """

    resumable = frozenset({"row_sample"})  # what is printed, not what is trained
    sampler: Sampler

    def characters_per_step(self, config: TextConfigT) -> int:
        """Characters one training step reads, in one process."""
        raise NotImplementedError

    def own_metrics(self, run: Run[TextConfigT]) -> dict[str, Any]:
        """The package's own entries of ``metrics.json`` (its architecture...), listed first."""
        return {}

    def callbacks(self, config: TextConfigT, data: TextData, progress: bool) -> list[Callback]:
        if not (progress and config.row_sample and is_main_process()) or data.vocabulary is None:
            return []
        return [
            RowSample(self.sampler, data.vocabulary, data.prompt, config.row_sample, config.temperature, config.seed)
        ]

    def evaluate(self, run: Run[TextConfigT]) -> dict[str, Any]:
        """The last validation in nats per character, the text's sizes and a sample (also ``sample.txt``)."""
        config, data, engine = run.config, run.data, run.engine
        history = engine.history
        val_losses = history["val_loss"] if history.rows else [math.nan]  # no row: no step was trained
        generator = torch.Generator().manual_seed(config.seed)
        generated = self.sampler(
            run.model, data.vocabulary, data.prompt, config.sample_length, config.temperature, config.top_k, generator
        )
        characters = engine.global_step * self.characters_per_step(config)  # per process
        metrics: dict[str, Any] = {
            **self.own_metrics(run),
            "tokens_per_second": characters / max(engine.seconds, 1e-9),  # validation time included
            "val_loss": val_losses[-1],
            "val_bpc": val_losses[-1] / math.log(2),
            "best_val_loss": min(val_losses),
            "vocab_size": len(data.vocabulary),
            "text": data.source,
            "train_characters": data.train_characters,
            "val_characters": data.val_characters,
            "prompt": data.prompt,
            "sample": generated,
        }
        if "val_reference_loss" in history:  # the torch.nn twin's validation loss, beside ours at every row
            pairs = zip(val_losses, history["val_reference_loss"], strict=True)
            metrics["reference_max_val_loss_gap"] = max(abs(ours - theirs) for ours, theirs in pairs)
            metrics["note"] = "tokens_per_second includes the torch twin's steps"
        if run.out is not None and is_main_process():
            write_text_atomic(run.out / "sample.txt", generated + "\n")
        return metrics
