from __future__ import annotations

import pytest

from convrec.data.samples import SLOT_TOKEN, item_token
from convrec.text.tokenizer import GEN_TOKEN, PAD_TOKEN, REC_TOKEN, load_tokenizer


def test_bundled_bpe_is_gpt2():
    tokenizer = load_tokenizer()
    assert tokenizer("Hello world").input_ids == [15496, 995]  # GPT-2's ids
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token == PAD_TOKEN and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert len(tokenizer) == 50257 + 4  # pad, slot, [REC], [GEN]


def test_task_and_item_tokens_are_single_tokens():
    tokenizer = load_tokenizer(num_items=5)
    assert len(tokenizer) == 50257 + 4 + 5
    for token in (SLOT_TOKEN, REC_TOKEN, GEN_TOKEN, item_token(3)):
        ids = tokenizer(f"I liked {token} a lot").input_ids
        assert tokenizer.convert_tokens_to_ids(token) in ids
    items = tokenizer.convert_tokens_to_ids([item_token(k) for k in range(5)])
    assert items == list(range(items[0], items[0] + 5))  # contiguous: item k = first + k
    text = f"Try {item_token(1)} or {SLOT_TOKEN}."
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_saved_tokenizer_loads_by_path_unchanged(tmp_path):
    tokenizer = load_tokenizer(num_items=3)
    tokenizer.save_pretrained(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok", num_items=3)
    assert len(again) == len(tokenizer)
    text = f"Hello {SLOT_TOKEN} and {item_token(2)}"
    assert again(text).input_ids == tokenizer(text).input_ids


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot load a tokenizer"):
        load_tokenizer(tmp_path / "nothing-here")
