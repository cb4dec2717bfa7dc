"""English sentences in, French sentences out: normalised, batched by length, decoded with the KV cache.

:func:`translate` is what ``scratch-transformer translate`` and the test evaluation call. It
normalises each sentence as the training pairs were, decodes the sentences in batches of
similar length (little padding), greedily or with beam search, and returns them in the input
order. Decoding a whole test split takes a while: ``progress=True`` reports each batch on stderr.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence

import torch

from scratch_engine.tools.distributed import is_main_process
from scratch_transformer.data import Vocabulary, normalize
from scratch_transformer.decoding import beam_search, greedy_decode
from scratch_transformer.masks import padding_mask
from scratch_transformer.model import Transformer
from scratch_transformer.translator import Translator


def translate(
    model: Translator | Transformer,
    sentences: Sequence[str],
    src_vocab: Vocabulary,
    tgt_vocab: Vocabulary,
    *,
    beam: int = 1,
    batch_size: int = 256,
    max_len: int | None = None,
    warn_unknown: bool = True,
    progress: bool = False,
) -> list[str]:
    """French for each English sentence: greedy decoding with the KV cache (``beam=1``) or beam search.

    Each sentence is first normalised as the training pairs were (:func:`~scratch_transformer.data.normalize`:
    NFC, every whitespace run one space, stripped), so ``"I  am cold. "`` is ``"I am cold."``. An empty
    sentence is a ``ValueError``. Characters the source vocabulary lacks are read as ``<unk>``, with a
    ``UserWarning`` naming them (``warn_unknown=False``: silently, as for a test split, whose rare
    characters the training split may not have). Sentences are decoded in batches of similar length;
    the output is in the input order. ``progress``: report each batch on stderr (``False``: silence).
    """
    if isinstance(sentences, str):  # it would decode each character as a sentence
        raise TypeError("translate expects a list of sentences, got one str: pass [sentence]")
    texts = [normalize(sentence) for sentence in sentences]
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        raise ValueError(
            f"cannot translate an empty sentence: sentence {empty[0] + 1} of {len(texts)} is empty (or only whitespace)"
        )
    unknown = sorted({char for text in texts for char in text if char not in src_vocab.index})
    if warn_unknown and unknown:
        shown = ", ".join(map(repr, unknown[:20])) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        warnings.warn(
            f"characters outside the model's source vocabulary are translated as <unk>: {shown}", stacklevel=2
        )
    transformer = model.model if isinstance(model, Translator) else model
    return _translate_texts(transformer, texts, src_vocab, tgt_vocab, beam, batch_size, max_len, progress)


def output_limit(src_lengths: Sequence[int]) -> int:
    """How many characters to decode at most for sources of these lengths."""
    return 2 * max(src_lengths, default=1) + 10  # French is longer than English, rarely twice as long


@torch.no_grad()
def _translate_texts(
    transformer: Transformer,
    texts: Sequence[str],
    src_vocab: Vocabulary,
    tgt_vocab: Vocabulary,
    beam: int,
    batch_size: int,
    max_len: int | None,
    progress: bool,
) -> list[str]:
    """:func:`translate` after its checks: normalised, non-empty ``texts``, decoded in batches of similar length."""
    device = next(iter(transformer.parameters())).data.device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[str] = [""] * len(texts)
    report = decoding_progress(progress, len(texts), "decoding" if beam == 1 else f"decoding, beam {beam}")
    pad, bos, eos = Vocabulary.PAD, Vocabulary.BOS, Vocabulary.EOS
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        encoded = [src_vocab.ids(texts[i]) for i in chunk]
        width = max(len(ids) for ids in encoded)
        if width > transformer.src_pos.max_len:
            raise ValueError(
                f"a sentence of {width} characters is longer than this model's {transformer.src_pos.max_len} positions"
            )
        src = torch.tensor([ids + [pad] * (width - len(ids)) for ids in encoded], device=device)
        mask = padding_mask(src, pad)
        limit = min(max_len or output_limit([len(ids) for ids in encoded]), transformer.tgt_pos.max_len - 1)
        if beam == 1:
            rows = greedy_decode(transformer, src, mask, bos, eos, limit, pad_id=pad).tolist()
        else:
            rows = beam_search(transformer, src, mask, bos, eos, limit, beam_size=beam)
        for i, ids in zip(chunk, rows, strict=True):
            out[i] = tgt_vocab.decode(ids)
        report(start + len(chunk))
    return out


def decoding_progress(progress: bool, total: int, what: str) -> Callable[[int], None]:
    """``report(done)`` after each batch: a line on stderr, rewritten in place on a terminal.

    ``progress=False``: silence; else a report, on the main process only.
    """
    if not progress or not is_main_process():
        return lambda done: None
    terminal, start = sys.stderr.isatty(), time.perf_counter()

    def report(done: int) -> None:
        line = f"{what}: {done:,}/{total:,} sentences, {time.perf_counter() - start:.0f} s"
        end = "\n" if done == total or not terminal else ""
        print(("\r" if terminal else "") + line, end=end, file=sys.stderr, flush=True)

    return report
