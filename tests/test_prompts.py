"""The prefix-injection core: padding, caching, gradients, fusion masks."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertLMHeadModel, GPT2Config, GPT2LMHeadModel

from convrec.prompting import backbone
from convrec.prompting.lm import PrefixLM, lm_shape
from convrec.prompting.prefix import Prefix, PrefixProjection, SemanticFusion, TaskPrefix


def tiny_lm() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=101,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=100,
        eos_token_id=100,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval().requires_grad_(False)


def kv_prefix(batch: int = 2, length: int = 3) -> tuple[PrefixProjection, torch.Tensor]:
    torch.manual_seed(1)
    return PrefixProjection(32, 2, 4), torch.randn(batch, length, 32)


IDS = torch.tensor([[0, 0, 5, 6, 7], [4, 5, 6, 7, 8]])
MASK = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])


def test_prefix_projection_shapes_match_the_lm() -> None:
    lm = tiny_lm()
    assert lm_shape(lm) == (2, 4, 32)
    projection, prompt = kv_prefix()
    key_values = projection(prompt)
    assert len(key_values) == 2
    assert all(k.shape == v.shape == (2, 4, 3, 8) for k, v in key_values)


def test_left_padding_does_not_change_the_states() -> None:
    model = PrefixLM(tiny_lm())
    projection, prompt = kv_prefix()
    with torch.no_grad():
        kv = projection(prompt)
        padded = model.hidden_states(IDS, MASK, Prefix(kv))
        alone = model.hidden_states(
            IDS[:1, 2:], MASK[:1, 2:], Prefix([(k[:1], v[:1]) for k, v in kv])
        )
    torch.testing.assert_close(padded[0, 2:], alone[0], atol=1e-5, rtol=1e-5)


def test_prefix_changes_the_states_and_masked_prefix_positions_do_not() -> None:
    model = PrefixLM(tiny_lm())
    projection, prompt = kv_prefix()
    with torch.no_grad():
        kv = projection(prompt)
        plain = model.lm.base_model(input_ids=IDS[1:], attention_mask=MASK[1:]).last_hidden_state
        with_prefix = model.hidden_states(
            IDS[1:], MASK[1:], Prefix([(k[1:], v[1:]) for k, v in kv])
        )
        assert not torch.allclose(plain, with_prefix)
        # A fully masked prefix is the same as no prefix at all.
        masked = Prefix([(k[1:], v[1:]) for k, v in kv], torch.zeros(1, 3, dtype=torch.long))
        torch.testing.assert_close(model.hidden_states(IDS[1:], MASK[1:], masked), plain)


def test_gradients_reach_the_prompt_but_not_the_lm() -> None:
    model = PrefixLM(tiny_lm())
    projection, prompt = kv_prefix()
    prompt.requires_grad_(True)
    states = model.hidden_states(IDS, MASK, Prefix(projection(prompt)))
    states[:, -1].sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert projection.proj.weight.grad is not None
    assert all(p.grad is None for p in model.lm.parameters())


def test_cached_greedy_generation_equals_recomputing_every_step() -> None:
    model = PrefixLM(tiny_lm())
    projection, prompt = kv_prefix()
    with torch.no_grad():
        prefix = Prefix(projection(prompt))
        out = model.generate(
            IDS,
            MASK,
            prefix,
            max_new_tokens=6,
            eos_token_id=100,
            pad_token_id=0,
            no_repeat_ngram_size=0,
        )
        ids, mask, expected = IDS, MASK, []
        for _ in range(6):
            token = model.logits(model.hidden_states(ids, mask, prefix)[:, -1]).argmax(-1)
            expected.append(token)
            ids = torch.cat([ids, token[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
    assert torch.equal(out, torch.stack(expected, dim=1))


def test_no_repeat_ngram_bans_repeated_trigrams() -> None:
    model = PrefixLM(tiny_lm())
    projection, prompt = kv_prefix()
    with torch.no_grad():
        out = model.generate(
            IDS,
            MASK,
            Prefix(projection(prompt)),
            max_new_tokens=30,
            eos_token_id=100,
            pad_token_id=0,
            no_repeat_ngram_size=3,
        )
    for row in torch.cat([IDS, out], dim=1).tolist():
        trigrams = [tuple(row[i : i + 3]) for i in range(len(row) - 2) if 0 not in row[i : i + 3]]
        assert len(trigrams) == len(set(trigrams))


def test_input_embedding_prefix_is_prepended() -> None:
    model = PrefixLM(tiny_lm())
    embeds = torch.randn(2, 4, 32)
    states = model.hidden_states(IDS, MASK, Prefix(embeds=embeds))
    assert states.shape == (2, 4 + IDS.shape[1], 32)


def test_sequences_longer_than_the_lm_positions_fail_clearly() -> None:
    model = PrefixLM(tiny_lm())  # 64 positions
    ids, mask = torch.ones(1, 60, dtype=torch.long), torch.ones(1, 60, dtype=torch.long)
    model.hidden_states(ids, mask, Prefix())
    with pytest.raises(ValueError, match=r"68 positions .* exceed the LM's 64"):
        model.hidden_states(ids, mask, Prefix(embeds=torch.randn(1, 8, 32)))


def test_fusion_sides_and_masks() -> None:
    torch.manual_seed(0)
    fusion = SemanticFusion(8)
    tokens, entities = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    token_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    entity_mask = torch.tensor([[0, 0, 0], [1, 1, 0]], dtype=torch.bool)
    fused, mask = fusion(tokens, token_mask, entities, entity_mask, "entity")
    assert fused.shape == (2, 3, 8) and torch.equal(mask, entity_mask)
    # padded tokens carry no weight: changing them changes nothing
    changed = tokens.clone()
    changed[0, 3:] = 100.0
    torch.testing.assert_close(
        fusion(changed, token_mask, entities, entity_mask, "entity")[0], fused
    )
    fused, mask = fusion(tokens, token_mask, entities, entity_mask, "token")
    assert fused.shape == (2, 5, 8) and torch.equal(mask, token_mask)
    torch.testing.assert_close(fused[0], tokens[0])  # a context without entities keeps T


def test_task_prefix_is_shared_across_the_batch() -> None:
    prefix = TaskPrefix(4, 8)
    out = prefix(3)
    assert out.shape == (3, 4, 8) and torch.equal(out[0], out[2])


def test_bfloat16_lm_tracks_float32_and_trains_the_prompt() -> None:
    exact, fast = PrefixLM(tiny_lm()), PrefixLM(tiny_lm(), precision="bfloat16")
    projection, prompt = kv_prefix()
    prompt.requires_grad_(True)
    embeds = torch.randn(2, 2, 32)
    prefix = Prefix(projection(prompt), embeds=embeds)
    states = fast.hidden_states(IDS, MASK, prefix)
    assert states.dtype == torch.float32  # prompt-side code never sees bfloat16
    with torch.no_grad():
        reference = exact.hidden_states(IDS, MASK, prefix)
    assert not torch.equal(states, reference)  # it did run in lower precision
    torch.testing.assert_close(states, reference, atol=0.1, rtol=0.05)
    fast.logits(states[:, -1]).sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in fast.lm.parameters())
    with torch.no_grad():
        out = fast.generate(IDS, MASK, prefix, max_new_tokens=4, eos_token_id=100, pad_token_id=0)
    assert out.shape == (2, 4) and out.dtype == torch.long


def test_a_bert_decoder_scores_through_its_own_lm_head() -> None:
    """A BERT-family decoder's logits come from its `cls` head (transform + output layer),
    not from the bare output layer; with a KV prefix and left padding it runs as GPT-2."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=101,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        is_decoder=True,
        pad_token_id=0,
    )
    lm = BertLMHeadModel(config).eval().requires_grad_(False)
    model = PrefixLM(lm)
    assert model.head is lm.cls
    with torch.no_grad():
        states = model.hidden_states(IDS[1:], MASK[1:], Prefix())
        torch.testing.assert_close(model.logits(states), lm(input_ids=IDS[1:]).logits)
        projection, prompt = kv_prefix()
        kv = projection(prompt)
        padded = model.hidden_states(IDS, MASK, Prefix(kv))
        alone = model.hidden_states(
            IDS[:1, 2:], MASK[:1, 2:], Prefix([(k[:1], v[:1]) for k, v in kv])
        )
    torch.testing.assert_close(padded[0, 2:], alone[0], atol=1e-5, rtol=1e-5)


def test_auto_precision_is_bfloat16_only_where_the_hardware_computes_it(monkeypatch) -> None:
    assert backbone.resolve_precision("float32") == "float32"
    assert backbone.resolve_precision("bfloat16") == "bfloat16"  # asked for: obeyed
    monkeypatch.setattr(backbone, "native_bfloat16", lambda: False)
    assert backbone.resolve_precision("auto") == "float32"  # emulated bf16: 20x slower
    monkeypatch.setattr(backbone, "native_bfloat16", lambda: True)
    assert backbone.resolve_precision("auto") == "bfloat16"
