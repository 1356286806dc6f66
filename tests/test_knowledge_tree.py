"""KP4SR's knowledge tree: sampling, token layout, the tree mask, and T5 applying it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast, T5Config, T5EncoderModel

from convrec.data.datasets.movielens import RecBoleReader
from convrec.data.kg import KnowledgeGraph
from convrec.data.sequences import leave_one_out
from convrec.graph.knowledge_tree import (
    KnowledgeTreeBuilder,
    TokenKind,
    TreeInput,
    TripleIndex,
    full_visibility_mask,
    knowledge_tree_mask,
    stack_tree_inputs,
    t5_encoder_attention_mask,
)
from convrec.text.templates import RELATION_TEMPLATES, TEST_TEMPLATE, TRAIN_TEMPLATES
from convrec.text.tokenizer import bundled_bpe_files
from tests.conftest import random_kg, shared_dataset

T, IT, L1, L2, P = (
    TokenKind.MPP_TEXT,
    TokenKind.MPP_ITEM,
    TokenKind.LEVEL1,
    TokenKind.LEVEL2,
    TokenKind.PAD,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny T5 tests

# -- a hand-drawn tree ---------------------------------------------------------------------
#
#   MPP: "u" [A] "," [B B] "next"        A = history node 0, B = node 1 (two tokens)
#   A -> s0 (2 tokens) -> c0 (2 tokens), c1 (1 token)
#     -> s1 (3 tokens)
#   B -> s2 (1 token)
#   then 2 padding tokens
#
#   position   0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16
HAND_KIND = [T, IT, T, IT, IT, T, L1, L1, L1, L1, L1, L1, L2, L2, L2, P, P]
HAND_NODE = [-1, 0, -1, 1, 1, -1, 0, 0, 0, 0, 0, 1, 0, 0, 0, -1, -1]
HAND_LEVEL1 = [-1, -1, -1, -1, -1, -1, 0, 0, 1, 1, 1, 2, 0, 0, 0, -1, -1]
HAND_LEVEL2 = [-1] * 12 + [0, 0, 1, -1, -1]
# Row = the attending token, column = the attended one.
HAND_MASK = """
    0  u   11111100000000000
    1  A   11111111111000000
    2  ,   11111100000000000
    3  B   11111100000100000
    4  B   11111100000100000
    5  nxt 11111100000000000
    6  s0  01000011111011100
    7  s0  01000011111011100
    8  s1  01000011111000000
    9  s1  01000011111000000
    10 s1  01000011111000000
    11 s2  00011000000100000
    12 c0  00000011000011100
    13 c0  00000011000011100
    14 c1  00000011000011100
    15 pad 00000000000000000
    16 pad 00000000000000000
"""
HAND_SEES = np.array(
    [[c == "1" for c in line.split()[-1]] for line in HAND_MASK.strip().splitlines()]
)


def hand_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array(HAND_KIND, dtype=np.int8),
        np.array(HAND_NODE, dtype=np.int64),
        np.array(HAND_LEVEL1, dtype=np.int64),
    )


def test_hand_drawn_tree_mask_is_exactly_the_expected_matrix():
    mask = knowledge_tree_mask(*hand_arrays())
    assert mask.dtype == bool and mask.shape == (17, 17)
    assert np.array_equal(mask, HAND_SEES), np.argwhere(mask != HAND_SEES)


def test_hand_drawn_tree_mask_rule_by_rule():
    m = knowledge_tree_mask(*hand_arrays())
    mpp, a, b = [0, 1, 2, 3, 4, 5], [1], [3, 4]
    s0, s1, s2, c0, c1, pad = [6, 7], [8, 9, 10], [11], [12, 13], [14], [15, 16]

    def sees(rows: list[int], cols: list[int]) -> bool:
        return bool(m[np.ix_(rows, cols)].all())

    def blind(rows: list[int], cols: list[int]) -> bool:
        return not m[np.ix_(rows, cols)].any()

    everything = list(range(17))

    def outside(*groups: list[int]) -> list[int]:
        inside = set(itertools.chain.from_iterable(groups))
        return [i for i in everything if i not in inside]

    # MPP text sees the MPP only (item tokens included: they are part of the MPP).
    assert sees([0, 2, 5], mpp) and blind([0, 2, 5], outside(mpp))
    # An item's MPP tokens see the MPP and that item's own level-1 sentences.
    assert sees(a, mpp + s0 + s1) and blind(a, outside(mpp, s0, s1))
    assert sees(b, mpp + s2) and blind(b, outside(mpp, s2))
    # A level-1 sentence sees its item, the level-1 sentences of that item, its children.
    assert sees(s0, a + s0 + s1 + c0 + c1) and blind(s0, outside(a, s0, s1, c0, c1))
    assert sees(s1, a + s0 + s1) and blind(s1, outside(a, s0, s1))
    assert sees(s2, b + s2) and blind(s2, outside(b, s2))
    # A level-2 sentence sees its parent and its siblings under that parent (and itself).
    for c in (c0, c1):
        assert sees(c, s0 + c0 + c1) and blind(c, outside(s0, c0, c1))
    # Padding sees nothing and is seen by nothing.
    assert blind(pad, everything) and blind(everything, pad)
    # The rules are symmetric: whoever a token sees, sees it.
    assert np.array_equal(m, m.T)


def test_mask_is_batched_and_works_on_torch_tensors():
    batch = [np.stack([a, a.copy()]) for a in hand_arrays()]
    batch[0][1, 6:] = P  # second row: the MPP only, then padding that keeps stale node ids
    masks = knowledge_tree_mask(*batch)
    assert masks.shape == (2, 17, 17)
    assert np.array_equal(masks[0], HAND_SEES)
    only_mpp = np.zeros((17, 17), dtype=bool)
    only_mpp[:6, :6] = True
    assert np.array_equal(masks[1], only_mpp)

    torch_mask = knowledge_tree_mask(*(torch.from_numpy(a) for a in batch))
    assert torch_mask.dtype == torch.bool
    assert np.array_equal(torch_mask.numpy(), masks)


def test_full_visibility_mask_only_hides_padding():
    mask = full_visibility_mask(np.array(HAND_KIND, dtype=np.int8))
    expected = np.zeros((17, 17), dtype=bool)
    expected[:15, :15] = True
    assert np.array_equal(mask, expected)


def test_t5_mask_forms():
    mask = torch.from_numpy(HAND_SEES)
    as_bool = t5_encoder_attention_mask(mask, torch.bool)
    assert as_bool.shape == (1, 1, 17, 17) and as_bool.dtype == torch.bool
    additive = t5_encoder_attention_mask(np.stack([HAND_SEES, HAND_SEES]))
    assert additive.shape == (2, 1, 17, 17) and additive.dtype == torch.float32
    assert torch.equal(additive[0, 0] == 0, mask)
    assert (additive[0, 0][~mask] == torch.finfo(torch.float32).min).all()
    with pytest.raises(ValueError, match="dtype"):
        t5_encoder_attention_mask(mask, torch.int64)
    with pytest.raises(ValueError, match="mask"):
        t5_encoder_attention_mask(torch.ones(2, 3))


# -- T5 applies the mask --------------------------------------------------------------------


def tiny_t5_encoder(num_layers: int, attention: str) -> T5EncoderModel:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=100,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=num_layers,
        num_heads=2,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel._from_config(config, attn_implementation=attention).eval()


def changed_positions(model: T5EncoderModel, attention_mask: torch.Tensor) -> np.ndarray:
    """changed[i, j]: does replacing token j change the encoder output at position i?"""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 100, (1, 17), generator=generator)
    ids[0, 15:] = 0
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=attention_mask).last_hidden_state[0]
        assert torch.isfinite(base).all()  # padding rows see nothing, yet no NaN
        changed = np.zeros((17, 17), dtype=bool)
        for j in range(17):
            other = ids.clone()
            other[0, j] = (ids[0, j] - 2 + 37) % 98 + 2  # another real token id
            out = model(input_ids=other, attention_mask=attention_mask).last_hidden_state[0]
            changed[:, j] = (out - base).abs().amax(-1).numpy() > 0
    return changed


@pytest.mark.parametrize(
    ("attention", "dtype"),
    [("sdpa", torch.bool), ("sdpa", torch.float32), ("eager", torch.float32)],
)
def test_t5_encoder_output_depends_only_on_visible_tokens(attention: str, dtype: torch.dtype):
    """One layer: position i's output changes exactly when a token i may see changes."""
    model = tiny_t5_encoder(1, attention)
    changed = changed_positions(model, t5_encoder_attention_mask(HAND_SEES, dtype))
    real = np.array(HAND_KIND) != P
    # Padding rows attend uniformly to everything (their outputs are never used), so only
    # real rows are compared.
    assert np.array_equal(changed[real], HAND_SEES[real]), np.argwhere(
        changed[real] != HAND_SEES[real]
    )


def test_t5_two_layers_spread_information_only_along_tree_paths():
    """Two layers: a token reaches position i exactly when a path of <= 2 edges links them."""
    model = tiny_t5_encoder(2, "sdpa")
    changed = changed_positions(model, t5_encoder_attention_mask(HAND_SEES, torch.bool))
    seen = HAND_SEES.astype(np.int64)
    reach = (seen @ seen) > 0  # the diagonal is True, so this includes one-edge paths
    real = np.array(HAND_KIND) != P
    assert np.array_equal(changed[real], reach[real])
    assert not reach[0, 14] and not reach[11, 14]  # MPP text and s2 cannot hear c1 in 2 layers


# -- sampling triples -------------------------------------------------------------------------


def reference_choices(kg: KnowledgeGraph, head: int, exclude: int) -> dict[int, list[int]]:
    """Brute force: relation -> sorted admissible tails of `head`."""
    choices: dict[int, list[int]] = {}
    for h, r, t in kg.triples.tolist():
        if h == head and t != exclude:
            choices.setdefault(r, []).append(t)
    return {r: sorted(ts) for r, ts in sorted(choices.items())}


@pytest.mark.parametrize("degree", [1, 2, 4, 100])
def test_deterministic_sampling_takes_smallest_relations_and_tails(degree: int):
    kg = random_kg()
    index = TripleIndex(kg)
    heads = np.arange(kg.num_entities)
    exclude = (heads * 7) % kg.num_entities  # some of these are real tails
    sampled = index.sample(heads, degree, exclude_tails=exclude)
    got = list(zip(sampled.parent, sampled.relation, sampled.tail, strict=True))
    expected = [
        (head, r, tails[0])
        for head in heads.tolist()
        for r, tails in list(reference_choices(kg, head, int(exclude[head])).items())[:degree]
    ]
    assert [tuple(map(int, x)) for x in got] == expected
    assert np.array_equal(sampled.head, heads[sampled.parent])


def test_random_sampling_respects_degree_and_exclusion_and_is_seeded():
    kg = random_kg(seed=1)
    index = TripleIndex(kg)
    heads = np.arange(kg.num_entities)
    exclude = (heads * 11) % kg.num_entities
    admissible = [reference_choices(kg, h, int(exclude[h])) for h in heads.tolist()]
    seen_tails: dict[int, set[int]] = {}  # head 0's relation -> tails drawn
    seen_relation_sets: set[tuple[int, ...]] = set()
    for seed in range(40):
        sampled = index.sample(heads, 3, np.random.default_rng(seed), exclude)
        again = index.sample(heads, 3, np.random.default_rng(seed), exclude)
        assert np.array_equal(sampled.tail, again.tail)
        assert np.array_equal(sampled.relation, again.relation)
        bounds = np.searchsorted(sampled.parent, np.arange(len(heads) + 1))
        relations, tails = sampled.relation.tolist(), sampled.tail.tolist()
        for head in heads.tolist():
            rows = range(bounds[head], bounds[head + 1])
            chosen = [relations[i] for i in rows]
            assert len(chosen) == min(3, len(admissible[head]))
            assert chosen == sorted(set(chosen))  # distinct, in relation order
            for i in rows:
                assert tails[i] in admissible[head][relations[i]]
        seen_relation_sets.add(tuple(relations[bounds[0] : bounds[1]]))
        for i in range(bounds[0], bounds[1]):
            seen_tails.setdefault(relations[i], set()).add(tails[i])
    assert len(seen_relation_sets) > 1  # relation subsets vary with the seed
    for relation, tails_drawn in seen_tails.items():  # uniform tails: all of a few turn up
        if len(admissible[0][relation]) <= 3:
            assert tails_drawn == set(admissible[0][relation])


def test_heads_without_triples_and_empty_input():
    kg = KnowledgeGraph(["a", "b", "c"], ["r.t.p"], [(0, 0, 1)], items=[0])
    index = TripleIndex(kg)
    sampled = index.sample(np.array([2, 0, 1]), 8)
    assert sampled.parent.tolist() == [1] and sampled.tail.tolist() == [1]
    assert len(index.sample(np.array([], dtype=np.int64), 8)) == 0
    assert len(index.sample(np.array([0]), 8, exclude_tails=np.array([1]))) == 0


# -- a small movie world for trees ------------------------------------------------------------
#
# items (dataset ids 0..3 -> tokens "10".."13"): toy, heat, alien, and "13" which is unlinked

WORLD = [
    ("m.toy", "film.film.directed_by", "m.john"),
    ("m.toy", "film.film.genre", "m.anim"),
    ("m.toy", "film.film.actor", "m.tom"),
    ("m.toy", "film.film.actor", "m.tim"),
    ("m.toy", "film.film.sequel", "m.heat"),
    ("m.heat", "film.film.directed_by", "m.john"),
    ("m.heat", "film.film.genre", "m.drama"),
    ("m.john", "film.director.film", "m.toy"),
    ("m.john", "film.director.film", "m.heat"),
    ("m.john", "film.writer.film", "m.alien"),
    ("m.john", "film.producer.film", "m.toy"),  # only points back to toy: skipped under toy
    ("m.anim", "film.film_genre.films_in_this_genre", "m.toy"),
    ("m.anim", "film.film_genre.films_in_this_genre", "m.alien"),
    ("m.tim", "film.actor.film", "m.alien"),
    ("m.drama", "film.film_genre.films_in_this_genre", "m.alien"),
]
ITEM_TOKENS = ("10", "11", "12", "13")


def world_kg() -> tuple[KnowledgeGraph, np.ndarray]:
    kg = KnowledgeGraph.from_named_triples(WORLD, items=["m.toy", "m.heat", "m.alien"])
    item_entity = np.array([kg.entity_id(m) for m in ("m.toy", "m.heat", "m.alien")] + [-1])
    return kg, item_entity


@pytest.fixture(scope="module")
def word_tokenizer() -> PreTrainedTokenizerFast:
    """One token per space-separated word, so lengths are easy to count by hand."""
    words = {"<pad>", "</s>", "<unk>", "<extra_id_0>", ",", ".", "User_7", *ITEM_TOKENS}
    for pattern in [*RELATION_TEMPLATES.values(), TEST_TEMPLATE.pattern]:
        words.update(pattern.split())
    for t in TRAIN_TEMPLATES:
        words.update(t.pattern.split())
    words.update(f"e{i}" for i in range(20))
    vocab = {w: i for i, w in enumerate(sorted(words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def world_builder(tokenizer: PreTrainedTokenizerFast, **options) -> KnowledgeTreeBuilder:
    kg, item_entity = world_kg()
    return KnowledgeTreeBuilder(kg, ITEM_TOKENS, item_entity, tokenizer, **options)


def test_test_time_tree_of_a_history(word_tokenizer):
    builder = world_builder(word_tokenizer)
    tree = builder.sample_tree([0, 3, 1])  # toy, unlinked, heat
    level1, level2 = builder.sentences(tree)
    assert tree.node_items.tolist() == [0, 3, 1]
    assert tree.level1.parent.tolist() == [0, 0, 0, 0, 2, 2]  # node 1 (unlinked) has none
    # Entity ids are sorted-name positions: alien 0, anim 1, drama 2, heat 3, john 4, tim 5,
    # tom 6, toy 7; items are written as their tokens (toy "10", heat "11", alien "12").
    assert level1 == [  # relations in sorted-name order, the smallest tail each
        "10 stars e5 .",  # film.film.actor: tim (5) < tom (6)
        "10 is directed by e4 .",
        "10 belongs to the genre e1 .",
        "10 has the sequel 11 .",
        "11 is directed by e4 .",
        "11 belongs to the genre e2 .",
    ]
    assert tree.level2.parent.tolist() == [0, 1, 1, 2, 3, 3, 4, 4, 4, 5]
    assert level2 == [
        "e5 acted in 12 .",
        "e4 directed 11 .",  # not "e4 directed 10": that restates its parent
        "e4 wrote 12 .",  # producer.film only leads back to 10: skipped
        "e1 is the genre of 12 .",
        "11 is directed by e4 .",
        "11 belongs to the genre e2 .",
        "e4 directed 10 .",  # under 11 the excluded back edge is e4 -> 11
        "e4 produced 10 .",
        "e4 wrote 12 .",
        "e2 is the genre of 12 .",
    ]
    assert builder.sentences(builder.sample_tree([0, 3, 1])) == (level1, level2)


def test_degree_and_hop_limits(word_tokenizer):
    for degree, hop_num in itertools.product([0, 1, 2, 8], [0, 1, 2]):
        builder = world_builder(word_tokenizer, degree=degree, hop_num=hop_num)
        for rng in (None, np.random.default_rng(degree)):
            tree = builder.sample_tree([0, 1, 2], rng)
            for level, parents in ((tree.level1, 3), (tree.level2, len(tree.level1))):
                counts = np.bincount(level.parent, minlength=parents)
                assert counts.max(initial=0) <= degree
                for p in range(parents):  # one tail per relation
                    rels = level.relation[level.parent == p]
                    assert len(rels) == len(set(rels.tolist()))
            assert (len(tree.level1) > 0) == (hop_num >= 1 and degree > 0)
            assert (len(tree.level2) > 0) == (hop_num >= 2 and degree > 0)
    with pytest.raises(ValueError, match="hop_num"):
        world_builder(word_tokenizer, hop_num=3)


def test_training_trees_are_seeded(word_tokenizer):
    builder = world_builder(word_tokenizer, degree=1)

    def draw(seed: int) -> tuple[list[str], list[str]]:
        return builder.sentences(builder.sample_tree([0, 1], np.random.default_rng(seed)))

    assert draw(3) == draw(3)
    assert len({tuple(draw(seed)[0]) for seed in range(40)}) > 2


def test_layout_tokens_and_structural_ids(word_tokenizer):
    builder = world_builder(word_tokenizer)
    history = [0, 3, 1, 0]  # toy is mentioned twice: one node
    prompt = builder.render_prompt("7", history, TEST_TEMPLATE)
    tree = builder.sample_tree(history)
    x = builder.encode(prompt, tree)
    level1, level2 = builder.sentences(tree)
    decode = word_tokenizer.convert_ids_to_tokens

    n_mpp = len(prompt.text.split())
    assert len(x) == n_mpp + sum(len(s.split()) for s in level1 + level2) + 1
    for name in ("kind", "node", "level1", "level2"):
        assert getattr(x, name).shape == x.input_ids.shape
    assert " ".join(decode(x.input_ids[:n_mpp].tolist())) == prompt.text
    assert x.input_ids[-1] == word_tokenizer.eos_token_id and x.kind[-1] == T
    items = np.flatnonzero(x.kind == IT)
    assert decode(x.input_ids[items].tolist()) == ["10", "13", "11", "10"]
    assert x.node[items].tolist() == [0, 1, 2, 0]
    assert (x.kind[:n_mpp] != P).all() and set(x.kind[:n_mpp].tolist()) == {T, IT}
    for j, sentence in enumerate(level1):
        at = (x.kind == L1) & (x.level1 == j)
        assert " ".join(decode(x.input_ids[at].tolist())) == sentence
        assert (x.node[at] == tree.level1.parent[j]).all()
    for k, sentence in enumerate(level2):
        at = x.level2 == k
        assert (x.kind[at] == L2).all()
        assert " ".join(decode(x.input_ids[at].tolist())) == sentence
        assert (x.level1[at] == tree.level2.parent[k]).all()
    assert (x.num_level1, x.num_level2) == (len(level1), len(level2))
    # Both mentions of toy see toy's level-1 sentences.
    mask = knowledge_tree_mask(x.kind, x.node, x.level1)
    toy_sentences = (x.kind == L1) & (x.node == 0)
    assert mask[items[0]][toy_sentences].all() and mask[items[3]][toy_sentences].all()
    assert not mask[items[1]][x.kind == L1].any()  # the unlinked item has none


@pytest.mark.parametrize("max_length", [25, 29, 30, 33, 40, 47, 55, 200])
def test_truncation_keeps_whole_sentences_and_consistent_ids(word_tokenizer, max_length: int):
    builder = world_builder(word_tokenizer, max_length=max_length)
    history = [0, 1]
    full = world_builder(word_tokenizer).build("7", history, TEST_TEMPLATE)
    x = builder.build("7", history, TEST_TEMPLATE)
    assert len(x) <= max_length
    assert x.input_ids[-1] == word_tokenizer.eos_token_id
    # The kept input is a prefix of the full one, cut at a sentence boundary.
    body = len(x) - 1
    assert np.array_equal(x.input_ids[:body], full.input_ids[:body])
    for name in ("kind", "node", "level1", "level2"):
        assert np.array_equal(getattr(x, name)[:body], getattr(full, name)[:body])
    if body < len(full) - 1:
        cut_kind, cut_level1, cut_level2 = (a[body] for a in (full.kind, full.level1, full.level2))
        assert (full.kind[body - 1], full.level1[body - 1], full.level2[body - 1]) != (
            cut_kind,
            cut_level1,
            cut_level2,
        )
        next_start = body + 1
        while next_start < len(full) - 1 and (
            full.level1[next_start] == cut_level1 and full.level2[next_start] == cut_level2
        ):
            next_start += 1
        assert next_start - body + len(x) > max_length  # the next sentence did not fit
    # Every kept level-2 sentence has its parent level-1 sentence kept, ids are dense.
    kept1 = set(x.level1[x.kind == L1].tolist())
    assert kept1 == set(range(x.num_level1))
    assert set(x.level1[x.kind == L2].tolist()) <= kept1
    assert set(x.level2[x.kind == L2].tolist()) == set(range(x.num_level2))
    assert x.num_level2 == 0 or x.num_level1 == full.num_level1


def test_mpp_longer_than_max_length_is_an_error(word_tokenizer):
    builder = world_builder(word_tokenizer, max_length=10)
    with pytest.raises(ValueError, match="MPP alone"):
        builder.build("7", [0, 1], TEST_TEMPLATE)


def test_prompt_and_tree_must_agree(word_tokenizer):
    builder = world_builder(word_tokenizer)
    with pytest.raises(ValueError, match="history items"):
        builder.encode(builder.render_prompt("7", [0, 1], TEST_TEMPLATE), builder.sample_tree([0]))


def test_hop_zero_is_the_prompt_alone(word_tokenizer):
    x = world_builder(word_tokenizer, hop_num=0).build("7", [0, 1], TEST_TEMPLATE)
    assert set(x.kind.tolist()) == {T, IT}
    assert knowledge_tree_mask(x.kind, x.node, x.level1).all()


def test_stacked_batch_pads_and_masks_like_single_inputs(word_tokenizer):
    builder = world_builder(word_tokenizer)
    singles = [
        builder.build("7", [0, 1], TEST_TEMPLATE),
        builder.build("7", [2], TRAIN_TEMPLATES[1]),
        builder.build("7", [3, 2, 0], TEST_TEMPLATE, np.random.default_rng(0)),
    ]
    batch = stack_tree_inputs(singles, word_tokenizer.pad_token_id)
    width = max(map(len, singles))
    assert batch.input_ids.shape == (3, width)
    masks = knowledge_tree_mask(batch.kind, batch.node, batch.level1)
    for row, single in enumerate(singles):
        n = len(single)
        assert np.array_equal(
            masks[row, :n, :n], knowledge_tree_mask(single.kind, single.node, single.level1)
        )
        assert not masks[row, n:].any() and not masks[row, :, n:].any()
        assert (batch.input_ids[row, n:] == word_tokenizer.pad_token_id).all()
        assert np.array_equal(batch.padding_mask()[row], np.arange(width) < n)
    with pytest.raises(ValueError, match="longer"):
        stack_tree_inputs(singles, 0, length=5)
    assert isinstance(batch, TreeInput)


def test_real_histories_on_movielens_respect_limits_and_the_kg():
    data = RecBoleReader(shared_dataset("movielens-100k")).read()
    split = leave_one_out(data)
    vocab, merges = bundled_bpe_files()
    tokenizer = GPT2TokenizerFast(vocab=str(vocab), merges=str(merges))
    builder = KnowledgeTreeBuilder.from_dataset(data, tokenizer)
    assert [r for r in data.kg.relations if r not in RELATION_TEMPLATES] == []
    triples = {tuple(t) for t in data.kg.triples.tolist()}
    rng = np.random.default_rng(0)
    for row in range(0, len(split.test), 50):
        history = split.test.history.sequence(row)[-5:]
        user = data.users[split.test.users[row]]
        for sampler in (None, rng):
            tree = builder.sample_tree(history, sampler)
            for level in (tree.level1, tree.level2):
                assert np.bincount(level.parent).max(initial=0) <= 8
                spo = zip(
                    level.head.tolist(), level.relation.tolist(), level.tail.tolist(), strict=True
                )
                assert set(spo) <= triples
            x = builder.encode(builder.render_prompt(user, history, TEST_TEMPLATE), tree)
            assert len(x) <= 512 and x.input_ids[-1] == tokenizer.eos_token_id
            kept1 = set(x.level1[x.kind == L1].tolist())
            assert set(x.level1[x.kind == L2].tolist()) <= kept1
