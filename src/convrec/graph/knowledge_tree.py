"""KP4SR's knowledge tree: sampled triples around a history, its token layout, and its mask.

The tree of one history (spec: specs/kp4sr.md)::

    root      the MPP sentence ("User_23 has watched 12 , 57 and will watch <extra_id_0> next .")
    level 0   each distinct history item mentioned in it (a repeated item is one node)
    level 1   up to `degree` triples per item: one relation each, one tail per relation
    level 2   up to `degree` triples of each level-1 tail (when `hop_num` is 2)

The encoder input is [MPP][all level-1 sentences][all level-2 sentences][eos], cut after the
last whole sentence that fits in `max_length` (the MPP itself must fit). Because all level-1
sentences come before all level-2 ones, a kept level-2 sentence always has its parent kept.

Every token carries structural ids, integer arrays of the input's shape ([L], or [B, L] for
a batch)::

    kind     PAD, MPP_TEXT, MPP_ITEM, LEVEL1 or LEVEL2
    node     history node (distinct item, in order of first mention) of an MPP_ITEM token,
             and the ancestor node of a LEVEL1 / LEVEL2 token; -1 otherwise
    level1   the level-1 sentence of a LEVEL1 token, the parent one of a LEVEL2 token; else -1
    level2   the level-2 sentence of a LEVEL2 token; else -1

`knowledge_tree_mask` derives the [L, L] visibility mask from kind, node and level1 alone.

Sampling. With a numpy Generator (training), a node's relations are a uniform random subset
of up to `degree` of its relations, and each relation's tail a uniform random one of its
tails; without one (evaluation), the `degree` smallest relation ids and the smallest tail id.
A level-2 triple never points back to the level-1 sentence's item ("D directed 12" under
"12 is directed by D" restates its parent): that tail is excluded, and a relation whose only
tail it is is skipped. Level-1 tails shared by several items are kept under each item (the
tree is a tree, not a graph).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from convrec.data.kg import KnowledgeGraph
from convrec.data.schema import SequentialDataset
from convrec.text.templates import (
    HEAD_SLOT,
    MASK_TOKEN,
    RELATION_TEMPLATES,
    TAIL_SLOT,
    EntityNaming,
    ItemNaming,
    PromptTemplate,
    RenderedPrompt,
    entity_texts,
    relation_template,
    user_text,
)

MAX_HOPS = 2  # the mask rules are defined for two levels


class TokenKind(IntEnum):
    PAD = 0
    MPP_TEXT = 1
    MPP_ITEM = 2
    LEVEL1 = 3
    LEVEL2 = 4


# -- sampling triples ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SampledTriples:
    """Triples chosen for a set of parent nodes; `parent[i]` indexes the parents' array."""

    parent: np.ndarray  # int64 [n]
    head: np.ndarray  # int64 [n] entity ids
    relation: np.ndarray  # int64 [n]
    tail: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return len(self.parent)

    @classmethod
    def empty(cls) -> SampledTriples:
        none = np.empty(0, dtype=np.int64)
        return cls(none, none, none, none)


class TripleIndex:
    """Each entity's out-triples grouped by relation, built once per KG and reused.

    Triples sorted by (head, relation, tail) form groups of equal (head, relation); an
    entity's groups are `head_groups[e]:head_groups[e + 1]`, a group's tails
    `tails[group_start[g]:group_end[g]]`, sorted. `sample` works on many heads at once.
    """

    def __init__(self, kg: KnowledgeGraph) -> None:
        triples = kg.triples[np.lexsort((kg.triples[:, 2], kg.triples[:, 1], kg.triples[:, 0]))]
        self.num_entities = kg.num_entities
        self.tails: np.ndarray = triples[:, 2].copy()
        starts_group = np.ones(len(triples), dtype=bool)
        starts_group[1:] = np.any(triples[1:, :2] != triples[:-1, :2], axis=1)
        self.group_start: np.ndarray = np.flatnonzero(starts_group)
        self.group_end: np.ndarray = np.append(self.group_start[1:], len(triples))
        self.group_relation: np.ndarray = triples[self.group_start, 1]
        group_head = triples[self.group_start, 0]
        self.head_groups: np.ndarray = np.searchsorted(
            group_head, np.arange(kg.num_entities + 1)
        ).astype(np.int64)
        # (group, tail) as one sorted key, to find a given tail inside many groups at once.
        group_of_triple = np.cumsum(starts_group) - 1
        self._group_tail_key = group_of_triple * self.num_entities + self.tails

    def sample(
        self,
        heads: np.ndarray,
        degree: int,
        rng: np.random.Generator | None = None,
        exclude_tails: np.ndarray | None = None,
    ) -> SampledTriples:
        """Up to `degree` relations per head, one tail each (see the module doc).

        `exclude_tails[i]` (-1 for none) is a tail head i may not point to. The result is
        ordered by parent, then relation id.
        """
        heads = np.asarray(heads, dtype=np.int64)
        if degree < 1 or not len(heads):
            return SampledTriples.empty()
        exclude = (
            np.full(len(heads), -1, dtype=np.int64)
            if exclude_tails is None
            else np.asarray(exclude_tails, dtype=np.int64)
        )
        first = self.head_groups[heads]
        counts = self.head_groups[heads + 1] - first
        parent = np.repeat(np.arange(len(heads), dtype=np.int64), counts)
        block_start = np.repeat(np.cumsum(counts) - counts, counts)
        group = np.repeat(first, counts) + np.arange(len(parent)) - block_start
        start, end = self.group_start[group], self.group_end[group]

        key = group * self.num_entities + exclude[parent]
        at = np.searchsorted(self._group_tail_key, key)
        inside = at < end
        found = inside & (exclude[parent] >= 0)
        found[found] = self._group_tail_key[at[found]] == key[found]
        choices = end - start - found
        keep = choices > 0
        parent, group, start, at, found, choices = (
            a[keep] for a in (parent, group, start, at, found, choices)
        )

        # Rank each head's groups (by relation id, or by a random key) and keep `degree`.
        if rng is None:
            order = np.arange(len(parent))
        else:
            order = np.lexsort((rng.random(len(parent)), parent))
        rank = np.empty(len(parent), dtype=np.int64)
        rank[order] = np.arange(len(parent)) - np.searchsorted(parent, parent[order])
        chosen = rank < degree
        parent, group, start, at, found, choices = (
            a[chosen] for a in (parent, group, start, at, found, choices)
        )

        if rng is None:
            pick = np.zeros(len(parent), dtype=np.int64)
        else:
            pick = (rng.random(len(parent)) * choices).astype(np.int64)
        position = start + pick
        position += found & (position >= at)  # step over the excluded tail
        return SampledTriples(
            parent=parent,
            head=heads[parent],
            relation=self.group_relation[group],
            tail=self.tails[position],
        )


@dataclass(frozen=True, eq=False)
class KnowledgeTree:
    """The sampled tree of one history (see the module doc)."""

    node_items: np.ndarray  # int64 [n0] dataset item id of each history node
    node_entities: np.ndarray  # int64 [n0] KG entity id, -1 when the item is unlinked
    history_nodes: np.ndarray  # int64 [len(history)] node of each history position
    level1: SampledTriples  # parent = node index
    level2: SampledTriples  # parent = level-1 index


def sample_knowledge_tree(
    index: TripleIndex,
    history: Sequence[int] | np.ndarray,
    item_entity: np.ndarray,
    *,
    degree: int = 8,
    hop_num: int = 2,
    rng: np.random.Generator | None = None,
) -> KnowledgeTree:
    """The tree of `history` (dataset item ids, oldest first); random with `rng`."""
    if not 0 <= hop_num <= MAX_HOPS:
        raise ValueError(f"hop_num must be 0, 1 or 2, not {hop_num}")
    history = np.asarray(history, dtype=np.int64)
    unique, first, inverse = np.unique(history, return_index=True, return_inverse=True)
    by_mention = np.argsort(first, kind="stable")
    node_of_unique = np.empty(len(unique), dtype=np.int64)
    node_of_unique[by_mention] = np.arange(len(unique))
    node_items = unique[by_mention]
    node_entities = np.asarray(item_entity, dtype=np.int64)[node_items]

    level1 = level2 = SampledTriples.empty()
    if hop_num >= 1:
        linked = np.flatnonzero(node_entities >= 0)
        found = index.sample(node_entities[linked], degree, rng)
        level1 = SampledTriples(linked[found.parent], found.head, found.relation, found.tail)
    if hop_num >= 2:
        level2 = index.sample(level1.tail, degree, rng, node_entities[level1.parent])
    return KnowledgeTree(
        node_items=node_items,
        node_entities=node_entities,
        history_nodes=node_of_unique[inverse.reshape(-1)],
        level1=level1,
        level2=level2,
    )


# -- token layout -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TreeInput:
    """Encoder input ids and structural ids: [L] for one history, [B, L] for a batch."""

    input_ids: np.ndarray  # int64
    kind: np.ndarray  # int8, TokenKind values
    node: np.ndarray  # int64
    level1: np.ndarray  # int64
    level2: np.ndarray  # int64

    def __len__(self) -> int:
        return self.input_ids.shape[-1]

    @property
    def num_level1(self) -> int:
        """Level-1 sentences kept (for one history)."""
        return int(self.level1[self.kind == TokenKind.LEVEL1].max(initial=-1)) + 1

    @property
    def num_level2(self) -> int:
        """Level-2 sentences kept (for one history)."""
        return int(self.level2.max(initial=-1)) + 1

    def padding_mask(self) -> np.ndarray:
        """True at real tokens: the 2-D mask for the decoder's cross-attention."""
        return self.kind != TokenKind.PAD


class KnowledgeTreeBuilder:
    """Samples trees over one KG and lays them out as token ids for one tokenizer.

    Built once per (dataset, tokenizer): it holds the triple index and caches the token ids
    of every relation template's text and of every entity it has written. The tokenizer
    should know the MPP's mask token (T5's does; add it to others as a special token), and
    its eos token, when it has one, ends every input (`add_eos`).
    """

    def __init__(
        self,
        kg: KnowledgeGraph,
        item_texts: Sequence[str],
        item_entity: np.ndarray,
        tokenizer: PreTrainedTokenizerBase,
        *,
        degree: int = 8,
        hop_num: int = 2,
        max_length: int = 512,
        add_eos: bool = True,
        entity_naming: EntityNaming = "id",
        relation_templates: Mapping[str, str] = RELATION_TEMPLATES,
        mask_token: str = MASK_TOKEN,
    ) -> None:
        if not 0 <= hop_num <= MAX_HOPS:
            raise ValueError(f"hop_num must be 0, 1 or 2, not {hop_num}")
        if degree < 0:
            raise ValueError(f"degree must not be negative, not {degree}")
        self.kg = kg
        self.item_texts = tuple(item_texts)
        self.item_entity = np.asarray(item_entity, dtype=np.int64)
        self.tokenizer = tokenizer
        self.degree = degree
        self.hop_num = hop_num
        self.max_length = max_length
        self.mask_token = mask_token
        self.eos_id: int | None = tokenizer.eos_token_id if add_eos else None
        self.index = TripleIndex(kg)
        self.entity_texts = entity_texts(kg, self.item_texts, self.item_entity, entity_naming)
        self.templates = [relation_template(name, relation_templates) for name in kg.relations]
        # Per relation: token ids of each literal run, the slot name where an entity goes.
        self._relation_pieces: list[list[list[int] | str]] = []
        for template in self.templates:
            pieces = template.pieces()
            literal = [p for p in pieces if p not in (HEAD_SLOT, TAIL_SLOT)]
            ids = iter(self._encode(literal))
            self._relation_pieces.append(
                [p if p in (HEAD_SLOT, TAIL_SLOT) else next(ids) for p in pieces]
            )
        self._literal_length = np.array(
            [
                sum(len(p) for p in pieces if not isinstance(p, str))
                for pieces in self._relation_pieces
            ],
            dtype=np.int64,
        )
        self._entity_ids: dict[int, list[int]] = {}
        self._entity_length = np.full(kg.num_entities, -1, dtype=np.int64)

    @classmethod
    def from_dataset(
        cls,
        dataset: SequentialDataset,
        tokenizer: PreTrainedTokenizerBase,
        item_text: ItemNaming = "id",
        **options,
    ) -> KnowledgeTreeBuilder:
        """A builder for a sequential dataset: an item is written as its token ("id": "12")
        or its title ("title": "Toy Story (1995)")."""
        texts = dataset.items if item_text == "id" else dataset.item_titles
        return cls(dataset.kg, texts, dataset.item_entity, tokenizer, **options)

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def _entity_tokens(self, entities: np.ndarray) -> None:
        """Tokenise (once, in one batch) the entities not yet cached."""
        missing = np.unique(entities)
        missing = missing[self._entity_length[missing] < 0]
        if len(missing):
            ids = self._encode([" " + self.entity_texts[e] for e in missing.tolist()])
            for entity, tokens in zip(missing.tolist(), ids, strict=True):
                self._entity_ids[entity] = tokens
                self._entity_length[entity] = len(tokens)

    # -- building ---------------------------------------------------------------------

    def sample_tree(
        self, history: Sequence[int] | np.ndarray, rng: np.random.Generator | None = None
    ) -> KnowledgeTree:
        return sample_knowledge_tree(
            self.index,
            history,
            self.item_entity,
            degree=self.degree,
            hop_num=self.hop_num,
            rng=rng,
        )

    def render_prompt(
        self,
        user: str,
        history: Sequence[int] | np.ndarray,
        template: PromptTemplate,
    ) -> RenderedPrompt:
        """The MPP of dataset user token `user` and dataset item ids `history`."""
        items = [self.item_texts[i] for i in np.asarray(history, dtype=np.int64).tolist()]
        return template.render(user_text(user), items, self.mask_token)

    def build(
        self,
        user: str,
        history: Sequence[int] | np.ndarray,
        template: PromptTemplate,
        rng: np.random.Generator | None = None,
    ) -> TreeInput:
        """Prompt, tree and layout of one history in one call."""
        prompt = self.render_prompt(user, history, template)
        return self.encode(prompt, self.sample_tree(history, rng))

    def sentences(self, tree: KnowledgeTree) -> tuple[list[str], list[str]]:
        """The level-1 and level-2 sentences as text (for inspection; encode does not use it)."""
        return self._sentences(tree.level1), self._sentences(tree.level2)

    def _sentences(self, triples: SampledTriples) -> list[str]:
        names = self.entity_texts
        return [
            self.templates[r].render(names[h], names[t]).lstrip()
            for h, r, t in zip(
                triples.head.tolist(), triples.relation.tolist(), triples.tail.tolist(), strict=True
            )
        ]

    def _sentence_ids(self, head: int, relation: int, tail: int) -> list[int]:
        ids: list[int] = []
        for piece in self._relation_pieces[relation]:
            if isinstance(piece, str):  # a slot
                ids += self._entity_ids[head if piece == HEAD_SLOT else tail]
            else:
                ids += piece
        return ids

    def encode(self, prompt: RenderedPrompt, tree: KnowledgeTree) -> TreeInput:
        """The token layout of a prompt and its tree, cut at `max_length`."""
        if prompt.num_items != len(tree.history_nodes):
            raise ValueError(
                f"the prompt names {prompt.num_items} history items, the tree has "
                f"{len(tree.history_nodes)}"
            )
        budget = self.max_length - (self.eos_id is not None)
        mpp_ids = self._encode([segment.text for segment in prompt.segments])
        mpp_length = sum(map(len, mpp_ids))
        if mpp_length > budget:
            raise ValueError(
                f"the MPP alone is {mpp_length} tokens, more than max_length {self.max_length} "
                "allows: cutting it would cut the masked slot; use fewer history items"
            )

        level1, level2 = tree.level1, tree.level2
        heads = np.concatenate([level1.head, level2.head])
        tails = np.concatenate([level1.tail, level2.tail])
        relations = np.concatenate([level1.relation, level2.relation])
        if len(heads):
            self._entity_tokens(np.concatenate([heads, tails]))
        lengths = (
            self._literal_length[relations]
            + self._entity_length[heads]
            + self._entity_length[tails]
        )
        fits = mpp_length + np.cumsum(lengths) <= budget
        kept = int(np.argmin(fits)) if not fits.all() else len(fits)  # stop at the first misfit
        kept1 = min(kept, len(level1))
        kept2 = kept - kept1

        # Per segment: token ids, kind, node, level1, level2 (segments = MPP runs, sentences).
        history_nodes = tree.history_nodes
        segment_ids = list(mpp_ids)
        kind = [TokenKind.MPP_ITEM if s.is_item else TokenKind.MPP_TEXT for s in prompt.segments]
        node = [int(history_nodes[s.item]) if s.is_item else -1 for s in prompt.segments]
        own1 = [-1] * len(mpp_ids)
        own2 = [-1] * len(mpp_ids)
        segment_ids += [
            self._sentence_ids(h, r, t)
            for h, r, t in zip(
                heads[:kept].tolist(), relations[:kept].tolist(), tails[:kept].tolist(), strict=True
            )
        ]
        parents1 = level1.parent[:kept1]
        parents2 = level2.parent[:kept2]
        kind += [TokenKind.LEVEL1] * kept1 + [TokenKind.LEVEL2] * kept2
        node += parents1.tolist() + level1.parent[parents2].tolist()
        own1 += list(range(kept1)) + parents2.tolist()
        own2 += [-1] * kept1 + list(range(kept2))
        if self.eos_id is not None:
            segment_ids.append([self.eos_id])
            kind.append(TokenKind.MPP_TEXT)
            node.append(-1)
            own1.append(-1)
            own2.append(-1)

        sizes = np.fromiter(map(len, segment_ids), dtype=np.int64, count=len(segment_ids))
        return TreeInput(
            input_ids=np.fromiter(
                itertools.chain.from_iterable(segment_ids), dtype=np.int64, count=int(sizes.sum())
            ),
            kind=np.repeat(np.asarray(kind, dtype=np.int8), sizes),
            node=np.repeat(np.asarray(node, dtype=np.int64), sizes),
            level1=np.repeat(np.asarray(own1, dtype=np.int64), sizes),
            level2=np.repeat(np.asarray(own2, dtype=np.int64), sizes),
        )


def stack_tree_inputs(
    inputs: Sequence[TreeInput], pad_token_id: int, length: int | None = None
) -> TreeInput:
    """Right-pad single inputs to one [B, length] batch (default: the longest input)."""
    length = max(map(len, inputs), default=0) if length is None else length
    if any(len(x) > length for x in inputs):
        raise ValueError(f"an input is longer than length {length}")
    batch = {
        "input_ids": np.full((len(inputs), length), pad_token_id, dtype=np.int64),
        "kind": np.full((len(inputs), length), TokenKind.PAD, dtype=np.int8),
        "node": np.full((len(inputs), length), -1, dtype=np.int64),
        "level1": np.full((len(inputs), length), -1, dtype=np.int64),
        "level2": np.full((len(inputs), length), -1, dtype=np.int64),
    }
    for row, single in enumerate(inputs):
        for name, array in batch.items():
            array[row, : len(single)] = getattr(single, name)
    return TreeInput(**batch)


# -- masks ------------------------------------------------------------------------------

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def knowledge_tree_mask(kind: Array, node: Array, level1: Array) -> Array:
    """Who may attend to whom: [..., L] structural ids -> [..., L, L] bool (True = may).

    Row = the attending token, column = the attended one. The spec's rules:
    MPP text sees the MPP (its text and item tokens); an MPP item token sees the MPP and its
    node's level-1 sentences; a level-1 sentence sees its node's MPP item tokens, every
    level-1 sentence of that node, and its level-2 children; a level-2 sentence sees its
    parent level-1 sentence and every level-2 sentence under that parent; padding sees
    nothing and is seen by nothing. Works on numpy arrays and torch tensors alike.
    """
    query, key = kind[..., :, None], kind[..., None, :]
    same_node = node[..., :, None] == node[..., None, :]
    same_level1 = level1[..., :, None] == level1[..., None, :]
    key_mpp = (key == TokenKind.MPP_TEXT) | (key == TokenKind.MPP_ITEM)
    key_level1 = key == TokenKind.LEVEL1
    key_level2 = key == TokenKind.LEVEL2
    return (
        ((query == TokenKind.MPP_TEXT) & key_mpp)
        | ((query == TokenKind.MPP_ITEM) & (key_mpp | (key_level1 & same_node)))
        | (
            (query == TokenKind.LEVEL1)
            & (
                (((key == TokenKind.MPP_ITEM) | key_level1) & same_node)
                | (key_level2 & same_level1)
            )
        )
        | ((query == TokenKind.LEVEL2) & (key_level1 | key_level2) & same_level1)
    )


def full_visibility_mask(kind: Array) -> Array:
    """The "prompts without the mask" ablation: real tokens see all real tokens."""
    real = kind != TokenKind.PAD
    return real[..., :, None] & real[..., None, :]


def t5_encoder_attention_mask(
    mask: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A [L, L] or [B, L, L] visibility mask as T5's encoder takes it: [B, 1, L, L].

    transformers 5 passes a 4-D mask to the attention function unchanged. T5's eager
    attention *adds* it to the scores, so a bool mask there is silently not applied (checked
    with transformers 5.23); SDPA (the default) converts a bool mask itself. The default is
    therefore the additive form (0 where allowed, the dtype's minimum elsewhere), applied by
    both; pass the model's float dtype (a mismatch fails loudly), or `torch.bool` for SDPA
    only. Give this mask to `model.encoder` alone: T5ForConditionalGeneration also hands
    `attention_mask` to the decoder's cross-attention, which needs the 2-D padding mask
    (`TreeInput.padding_mask`), so pass `encoder_outputs=` there.
    """
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() != 3 or mask.shape[-1] != mask.shape[-2]:
        raise ValueError(f"expected a [L, L] or [B, L, L] mask, got {tuple(mask.shape)}")
    mask = mask[:, None]
    if dtype == torch.bool:
        return mask
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be torch.bool or a float dtype, not {dtype}")
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return additive.masked_fill_(~mask, torch.finfo(dtype).min)


__all__ = [
    "KnowledgeTree",
    "KnowledgeTreeBuilder",
    "SampledTriples",
    "TokenKind",
    "TreeInput",
    "TripleIndex",
    "full_visibility_mask",
    "knowledge_tree_mask",
    "sample_knowledge_tree",
    "stack_tree_inputs",
    "t5_encoder_attention_mask",
]
