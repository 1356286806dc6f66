"""KP4SR: knowledge prompt-tuning for sequential recommendation (Zhai et al. 2023).

Spec: specs/kp4sr.md. One sample (user, history, target) flows top to bottom through the
paper's T5 backbone (the encoder backbone, below, replaces the last four steps)::

    history      the last `history_items` items before the target, oldest first
    MPP          a cloze prompt over them (`convrec.text.templates`):
                   "User_23 interacted with 12 , 57 ; predict the next item : <extra_id_0> ."
                 training: a random paraphrase per sample; evaluation: the held-out TEST_TEMPLATE
    knowledge    level-1 and level-2 triple sentences around the history items, "12 is
                 directed by e4 ." (random subsets in training, the deterministic tree at
                 evaluation), laid out as [MPP][level 1][level 2][eos] and cut at
                 `max_input_tokens` (`convrec.graph.knowledge_tree`)
    mask         [B, 1, L, L] encoder self-attention: the knowledge tree mask ("tree"),
                 real tokens see real tokens ("full"), or the MPP alone ("none", hop 0)
    encoder      T5 encoder under that mask                              -> states [B, L, d]
    decoder      T5 decoder cross-attending to the states (2-D padding mask)
    training     target = the item's identifier tokens + eos (" 12" </s>); per-sample mean
                 token cross-entropy
    recommend    beam search constrained by a trie of every item's identifier tokens + eos:
                 `num_beams` beams, as many distinct items, best first -> scores [B, num_items]

Two backbones (`backbone`). "t5" is the paper's: the T5 above generates the identifier.
"encoder" gives the method what the paper had and this machine lacks, a pretrained language
model, from what is offline: the frozen all-MiniLM-L6-v2 (BERT-family; any sentence-
transformers model by path) reads the same prompt and tree under the same mask (its own
WordPiece tokens and [MASK] slot), and an item head (`PromptItemScorer`) scores the
catalogue from the slot's state: full ranking, cross-entropy over every item, no beam
search. Items are best written by title then (`item_text: title`, "Toy Story (1995)"): the
paper names items by id, which a pretrained encoder cannot read. A non-item KG entity keeps
its id ("e1195"): KB4Rec's files have no names for them.

Tokenizer. No T5 SentencePiece model is available offline, so the compact T5 reads GPT-2's
byte-level BPE (`convrec.text.tokenizer`) plus the MPP's mask token `<extra_id_0>`; its
pad token starts the decoder, as T5's does. A checkpoint (`t5: <dir>`, e.g. a local
t5-small) brings its own tokenizer, which already has the mask token.

Training draws. A training sample's template and tree come from a generator seeded by
(run seed, epoch, position in the epoch) with `training_prompts: redraw`, or by the sample
itself with `fixed` (`SeededSamples`): independent of batching, process count and the
global RNG, so a run is reproducible and a resumed run draws what the uninterrupted one
drew. Attention-probability dropout is a setting of its own
(`attention_dropout`, default off): its random [B, heads, L, L] mask is a quarter of a CPU
training step at 512 tokens.

Vocabulary cost. The output layer spans the whole vocabulary (50,262 BPE tokens). In
training only a sample's 2-3 target positions reach it: 4% of a step next to a 512-token
encoder (measured on MovieLens-100k, one CPU thread). Beam search needs a full-vocabulary
log-softmax for every beam at every step (beam scores are the model's item
log-probabilities): 21% of evaluation time, against 67% for the encoder. Neither
dominates, so the vocabulary stays whole and a checkpoint's head is used unchanged.

Beam search (`constrained_beam_search`) is vectorised over samples and beams: a beam is a
trie node, its candidates are the node's children, and the top `num_beams` candidates of a
sample survive. A beam that has emitted eos is finished and competes unchanged with the
live ones; the search stops when every beam is finished. So every returned sequence is a
catalogue item, items are distinct (a trie leaf has one path), and the ranking is by the
item's log-probability under the model (no length normalisation, unlike `generate`'s
default length_penalty of 1). The decoder runs all beams of a sample as one sequence with a
block-diagonal causal mask, so cross-attention projects the encoder states once per sample
rather than once per beam.

Scores: the beam at rank r (0-based) scores `num_beams - r`, every other item -inf. The
evaluation ranks the returned list first, best first, and an item scored -inf last
(`convrec.evaluation.ranking`): HR@k and NDCG@k are exact for k <= num_beams (whenever the
catalogue has at least num_beams items), and larger cut-offs count the unreturned items as
misses.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from transformers import PreTrainedTokenizerBase, T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.t5.modeling_t5 import T5Attention

from convrec.data.schema import TaskKind
from convrec.data.sequences import SeqSample
from convrec.data.tasks import EpochSamples, SeqTask
from convrec.graph.knowledge_tree import (
    MAX_HOPS,
    KnowledgeTreeBuilder,
    TokenKind,
    full_visibility_mask,
    knowledge_tree_mask,
    stack_tree_inputs,
    t5_encoder_attention_mask,
)
from convrec.models.base import Batch, ConvRecModel, ModelConfig, Stage, keep_out_of_checkpoints
from convrec.registry import register_model
from convrec.settings import Settings
from convrec.text.encoder import DEFAULT_ENCODER, SentenceEncoder
from convrec.text.lm import load_local_model
from convrec.text.templates import MASK_TOKEN, EntityNaming, ItemNaming, mpp_template
from convrec.text.tokenizer import BUNDLED_BPE, load_tokenizer

IGNORE = -100  # label of a target position that carries no loss (padding)
Knowledge = Literal["tree", "full", "none"]
Backbone = Literal["t5", "encoder"]
Pool = Literal["mask", "mpp"]
TrainingPrompts = Literal["redraw", "fixed"]
MAX_ENCODER_TOKENS = 512  # BERT-family position embeddings


# -- the T5 backbone ------------------------------------------------------------------------


class CompactT5Config(Settings):
    """Architecture of the T5 built from a config (the vocabulary comes from the tokenizer)."""

    d_model: int = Field(128, ge=8, description="hidden size")
    d_ff: int = Field(512, ge=8, description="feed-forward inner size")
    d_kv: int = Field(32, ge=4, description="size of each attention head")
    num_heads: int = Field(4, ge=1, description="attention heads")
    num_layers: int = Field(2, ge=1, description="encoder blocks")
    num_decoder_layers: int = Field(2, ge=1, description="decoder blocks")
    dropout: float = Field(
        0.1, ge=0, lt=1, description="dropout in every block (attention: attention_dropout)"
    )


def kp4sr_tokenizer(name_or_path: str | Path = BUNDLED_BPE) -> PreTrainedTokenizerBase:
    """GPT-2 BPE (default) or a checkpoint's tokenizer, with padding and the MPP mask token."""
    tokenizer = load_tokenizer(name_or_path)
    if MASK_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([MASK_TOKEN], special_tokens=True)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {str(name_or_path)!r} has no eos token to end identifiers")
    return tokenizer


def build_compact_t5(
    config: CompactT5Config, tokenizer: PreTrainedTokenizerBase
) -> T5ForConditionalGeneration:
    """A randomly initialised T5 whose vocabulary and special ids are the tokenizer's."""
    t5 = T5Config(
        vocab_size=len(tokenizer),
        d_model=config.d_model,
        d_ff=config.d_ff,
        d_kv=config.d_kv,
        num_heads=config.num_heads,
        num_layers=config.num_layers,
        num_decoder_layers=config.num_decoder_layers,
        dropout_rate=config.dropout,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,  # as T5: the decoder starts at <pad>
    )
    return T5ForConditionalGeneration(t5)


class T5NotFoundError(FileNotFoundError):
    """A T5 checkpoint named by path is not available locally."""


def load_t5(
    name_or_path: str | Path,
) -> tuple[T5ForConditionalGeneration, PreTrainedTokenizerBase]:
    """A T5 checkpoint and its own tokenizer (plus padding and the mask token) from local
    files; the decoder starts from the pad token when the checkpoint does not say."""
    model, tokenizer = load_local_model(
        T5ForConditionalGeneration,
        name_or_path,
        kp4sr_tokenizer,
        missing=T5NotFoundError,
        hint="Leave model.t5 unset for the compact T5, or give a directory written by "
        "save_pretrained.",
    )
    if model.config.decoder_start_token_id is None:
        model.config.decoder_start_token_id = model.config.pad_token_id
    return model, tokenizer


# -- item identifiers and constrained beam search -------------------------------------------


class ItemTrie(nn.Module):
    """Prefix tree of item token sequences, each ended by eos; a leaf is one item.

    Stored as CSR tensors (non-persistent buffers: they follow the model's device and stay
    out of checkpoints, being derived from the data): node n's outgoing edges are
    `child_start[n]:child_start[n + 1]`, each with a token and a child node, sorted by
    token; `node_item[n]` is the item a leaf spells (-1 elsewhere). Node 0 is the root.
    """

    child_start: torch.Tensor
    child_token: torch.Tensor
    child_node: torch.Tensor
    node_item: torch.Tensor

    def __init__(self, sequences: Sequence[Sequence[int]], eos_token_id: int) -> None:
        super().__init__()
        children: list[dict[int, int]] = [{}]
        node_item = [-1]
        for item, tokens in enumerate(sequences):
            if not len(tokens) or eos_token_id in tokens:
                raise ValueError(
                    f"item {item}: identifier tokens {list(tokens)} are empty or hold eos"
                )
            node = 0
            for token in [*tokens, eos_token_id]:
                child = children[node].get(int(token))
                if child is None:
                    child = children[node][int(token)] = len(children)
                    children.append({})
                    node_item.append(-1)
                node = child
            if node_item[node] >= 0:
                raise ValueError(
                    f"items {node_item[node]} and {item} have the same identifier tokens"
                )
            node_item[node] = item
        edges = [sorted(c.items()) for c in children]
        counts = torch.tensor([len(e) for e in edges], dtype=torch.long)
        flat = [edge for node_edges in edges for edge in node_edges]
        self.eos_token_id = eos_token_id
        self.num_items = len(sequences)
        self.depth = max((len(s) + 1 for s in sequences), default=0)  # decoding steps
        self.max_children = int(counts.max())
        self.register_buffer("child_start", F.pad(counts.cumsum(0), (1, 0)), persistent=False)
        self.register_buffer(
            "child_token", torch.tensor([t for t, _ in flat], dtype=torch.long), persistent=False
        )
        self.register_buffer(
            "child_node", torch.tensor([n for _, n in flat], dtype=torch.long), persistent=False
        )
        self.register_buffer("node_item", torch.tensor(node_item), persistent=False)

    def _walk(self, prefix: Sequence[int]) -> int | None:
        node = 0
        for token in prefix:
            start, end = self.child_start[node : node + 2].tolist()
            tokens = self.child_token[start:end]
            at = torch.searchsorted(tokens, int(token)).item()
            if at == end - start or tokens[at] != token:
                return None
            node = int(self.child_node[start + at])
        return node

    def allowed_tokens(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that continue `prefix` (generated tokens, no decoder start) towards an item.

        The signature of `generate(prefix_allowed_tokens_fn=...)` minus the batch index;
        empty after a complete identifier or off the trie.
        """
        node = self._walk(prefix)
        if node is None:
            return []
        start, end = self.child_start[node : node + 2].tolist()
        return self.child_token[start:end].tolist()

    def item_of(self, tokens: Sequence[int]) -> int:
        """The item `tokens` (ending with eos) spells, -1 when it spells none."""
        node = self._walk(tokens)
        return -1 if node is None else int(self.node_item[node])


NextLogProbs = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def constrained_beam_search(
    trie: ItemTrie,
    next_log_probs: NextLogProbs,
    batch_size: int,
    num_beams: int,
    start_token_id: int,
    pad_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search over the trie's items; see the module doc.

    `next_log_probs(tokens)` maps decoder inputs [B, K, T] (start token first; beams of a
    sample side by side) to next-token log-probabilities [B, K, V] at their last position.
    Returns items [B, num_beams] (best first; -1 where the catalogue has fewer items) and
    their log-probabilities (-inf there).
    """
    device = trie.child_start.device
    tokens = torch.full((batch_size, 1, 1), start_token_id, dtype=torch.long, device=device)
    node = torch.zeros((batch_size, 1), dtype=torch.long, device=device)
    score = torch.zeros((batch_size, 1), device=device)
    slots = torch.arange(trie.max_children, device=device)
    last_edge = max(len(trie.child_token) - 1, 0)
    for _ in range(trie.depth):
        finished = trie.node_item[node] >= 0
        if not (torch.isfinite(score) & ~finished).any():
            break
        log_probs = next_log_probs(tokens).float()  # [B, K, V]
        first = trie.child_start[node]
        has_edge = slots < (trie.child_start[node + 1] - first)[..., None]  # [B, K, M]
        edge = torch.where(has_edge, first[..., None] + slots, 0).clamp(max=last_edge)
        child_token = trie.child_token[edge]
        child_node = trie.child_node[edge]
        candidate = (score[..., None] + log_probs.gather(-1, child_token)).masked_fill(
            ~has_edge, -torch.inf
        )
        # A finished beam's one candidate is itself, unchanged (it appends padding).
        candidate[..., 0] = torch.where(finished, score, candidate[..., 0])
        child_node[..., 0] = torch.where(finished, node, child_node[..., 0])
        child_token[..., 0] = torch.where(finished, pad_token_id, child_token[..., 0])

        width = min(num_beams, candidate[0].numel())
        score, pick = candidate.flatten(1).topk(width, dim=1)
        parent = pick // trie.max_children
        node = child_node.flatten(1).gather(1, pick)
        history = tokens.gather(1, parent[..., None].expand(-1, -1, tokens.shape[2]))
        tokens = torch.cat([history, child_token.flatten(1).gather(1, pick)[..., None]], dim=2)
    found = torch.isfinite(score)
    items = torch.where(found, trie.node_item[node], -1)
    missing = num_beams - items.shape[1]
    if missing > 0:
        items = F.pad(items, (0, missing), value=-1)
        score = F.pad(score, (0, missing), value=-torch.inf)
    return items, score


def beam_rank_scores(items: torch.Tensor, num_items: int) -> torch.Tensor:
    """[B, K] ranked items (-1 = none) -> scores [B, num_items]: K - rank, else -inf."""
    batch, width = items.shape
    scores = torch.full((batch, num_items), -torch.inf, device=items.device)
    rank_score = torch.arange(width, 0, -1, dtype=scores.dtype, device=items.device)
    returned = items >= 0
    rows = torch.arange(batch, device=items.device)[:, None].expand(-1, width)
    scores[rows[returned], items[returned]] = rank_score.expand(batch, -1)[returned]
    return scores


def beam_block_mask(
    num_beams: int, length: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """[1, 1, K*T, K*T] additive decoder self-attention mask: K beams of T tokens side by
    side, each causal on its own (the same additive form as the encoder's mask)."""
    position = torch.arange(num_beams * length, device=device)
    beam, step = position // length, position % length
    visible = (beam[:, None] == beam[None, :]) & (step[None, :] <= step[:, None])
    return t5_encoder_attention_mask(visible, dtype)


# -- a pretrained encoder with an item head ------------------------------------------------


def memo_key(sample: SeqSample, history_items: int, seed: tuple[int, ...] | None) -> bytes:
    """What decides a prompt: its user, the history items it shows, and its draw's seed
    (None: the evaluation template and tree)."""
    shown = np.ascontiguousarray(sample.history[-history_items:], dtype=np.int64)
    draw = np.asarray([] if seed is None else seed, dtype=np.uint64)
    return b"|".join((str(sample.user).encode(), shown.tobytes(), draw.tobytes()))


class PromptItemScorer(nn.Module):
    """A frozen pretrained encoder reads the prompt under the tree mask; a head scores items.

    The pooled prompt state p (the masked slot's state, or the MPP tokens' mean; L2-normalised
    like the encoder's sentence vectors) becomes a query q = W p; item i scores
    q . (V t_i + e_i) + b_i, where t_i is the encoder's own vector of the item's title
    (fixed), V a learned map (identity at the start), e_i a learned item embedding (zero at
    the start, so an untrained model ranks by title similarity; left out with
    `free_items=False`, so that items differ only through their titles) and b_i a learned
    bias.
    The encoder is frozen and always in eval mode, so a sample's state is a function of its
    prompt: states of deterministic prompts (evaluation; training with `training_prompts:
    fixed`) are memoised under `memo_key`, and a pass over samples seen before costs the
    head alone.
    """

    def __init__(
        self,
        encoder: str,
        item_texts: Sequence[str],
        pool: Pool,
        dropout: float,
        *,
        free_items: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = SentenceEncoder(encoder).eval()  # frozen: no dropout, ever (`train`)
        self.encoder.requires_grad_(False)
        keep_out_of_checkpoints(self, "encoder", on_load=self.clear_memo)
        self.pool = pool
        dim = self.encoder.dim
        self.register_buffer(
            "title_vectors", self.encoder.encode(list(item_texts)), persistent=False
        )
        self.dropout = nn.Dropout(dropout)
        self.query = nn.Linear(dim, dim)
        self.title_map = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.title_map.weight)
        self.item_embedding = (
            nn.Parameter(torch.zeros(len(item_texts), dim)) if free_items else None
        )
        self.item_bias = nn.Parameter(torch.zeros(len(item_texts)))
        self._memo: dict[bytes, torch.Tensor] = {}

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.encoder.tokenizer

    def clear_memo(self) -> None:
        self._memo.clear()

    def train(self, mode: bool = True) -> PromptItemScorer:
        super().train(mode)
        self.encoder.eval()  # a state depends on its input alone: the memo stays valid
        return self

    def _states(self, batch: Batch, visible: torch.Tensor) -> torch.Tensor:
        """Pooled prompt states [B, dim] of the frozen encoder under `visible` [B, L, L]."""
        states = self.encoder.transformer(
            input_ids=batch["input_ids"],
            attention_mask=t5_encoder_attention_mask(visible, self.title_vectors.dtype),
        ).last_hidden_state
        if self.pool == "mask":
            slot = batch["input_ids"] == self.tokenizer.mask_token_id
            pooled = states[slot]  # one masked slot per prompt, in row order
        else:
            kind = batch["kind"]
            mpp = ((kind == TokenKind.MPP_TEXT) | (kind == TokenKind.MPP_ITEM)).unsqueeze(-1)
            pooled = (states * mpp).sum(1) / mpp.sum(1)
        return F.normalize(pooled, dim=-1)  # unit length, as the encoder's sentence vectors

    def has_state(self, key: bytes | None) -> bool:
        return key is not None and key in self._memo

    @torch.no_grad()
    def states(self, batch: Batch, visible: torch.Tensor | None) -> torch.Tensor:
        """Pooled states [B, dim] of a batch whose inputs hold only the rows `missing`
        (`visible` is theirs): those are computed (and memoised under their key unless it
        is None), the other rows come from the memo."""
        keys, missing = batch["keys"], batch["missing"].tolist()
        fresh = dict(zip(missing, self._states(batch, visible), strict=True)) if missing else {}
        rows = []
        for row, key in enumerate(keys):
            state = fresh.get(row)
            if state is None:
                state = self._memo[key].to(self.title_vectors.device)
            elif key is not None:
                self._memo[key] = state.cpu()
            rows.append(state)
        return torch.stack(rows)

    def forward(self, batch: Batch, visible: torch.Tensor | None) -> torch.Tensor:
        """Item scores [B, num_items] (see `states` for the batch)."""
        query = self.query(self.dropout(self.states(batch, visible)))
        items = self.title_map(self.title_vectors)
        if self.item_embedding is not None:
            items = items + self.item_embedding
        return query @ items.T + self.item_bias


# -- the model --------------------------------------------------------------------------------


class KP4SRConfig(ModelConfig):
    backbone: Backbone = Field(
        "t5",
        description="t5: a T5 generates the item's identifier (the paper); encoder: a frozen "
        "pretrained sentence encoder reads the prompt and a learned item head scores the "
        "catalogue (see the module doc)",
    )
    encoder: str = Field(
        DEFAULT_ENCODER,
        description="backbone encoder: sentence-transformers model (bundled name or local dir)",
    )
    pool: Pool = Field(
        "mask",
        description="backbone encoder: the prompt state the item head reads, the masked "
        "slot's (mask) or the mean over the MPP's tokens (mpp)",
    )
    item_embedding: bool = Field(
        True,
        description="backbone encoder: give each item a learned embedding next to its mapped "
        "title vector (false: items differ only through their titles and a bias)",
    )
    head_dropout: float = Field(
        0.1, ge=0, lt=1, description="backbone encoder: dropout on the pooled prompt state"
    )
    training_prompts: TrainingPrompts = Field(
        "redraw",
        description="redraw: a new template and tree per sample every epoch (the authors' "
        "code); fixed: one draw per sample for the whole run (with backbone encoder, each "
        "sample's frozen state is computed once, and later epochs cost the item head alone)",
    )
    item_text: ItemNaming = Field(
        "id",
        description='how an item is written in prompts and sentences: its token (id, "12", the '
        'paper) or its title (title, "Toy Story (1995)": what a pretrained encoder can read)',
    )
    t5: str | None = Field(
        None,
        description="null: a T5 built from compact_t5 with the GPT-2 BPE tokenizer; else a local "
        "checkpoint directory (e.g. t5-small) loaded with its own tokenizer",
    )
    compact_t5: CompactT5Config = Field(
        default_factory=CompactT5Config, description="architecture of the T5 built when t5 is null"
    )
    knowledge: Knowledge = Field(
        "tree",
        description="tree: knowledge prompts under the knowledge tree mask (KP4SR); full: the "
        "prompts without the mask (ablation); none: the MPP alone (ablation)",
    )
    degree: int = Field(8, ge=0, description="triples per tree node: one tail per relation")
    hop_num: int = Field(
        2, ge=0, le=MAX_HOPS, description="tree levels of triples (ignored by knowledge: none)"
    )
    max_input_tokens: int = Field(
        512,
        ge=32,
        description="encoder input limit; knowledge sentences that do not fit are dropped",
    )
    history_items: int = Field(5, ge=1, description="latest history items in the prompt")
    num_beams: int = Field(20, ge=1, description="beams and returned items of the beam search")
    entity_naming: EntityNaming = Field(
        "id", description="text of a non-item KG entity: 'id' (e1195) or 'mid' (m.0bxtg)"
    )
    attention_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="dropout on attention probabilities (T5 uses its dropout rate there; its "
        "random mask over [B, heads, L, L] costs a quarter of a CPU training step at 512 tokens)",
    )

    @model_validator(mode="after")
    def _encoder_input_fits(self) -> KP4SRConfig:
        if self.backbone == "encoder" and self.max_input_tokens > MAX_ENCODER_TOKENS:
            raise ValueError(
                f"max_input_tokens {self.max_input_tokens} exceeds the encoder's "
                f"{MAX_ENCODER_TOKENS} positions (backbone: encoder)"
            )
        return self


@dataclass(frozen=True, slots=True)
class SeededSample:
    """A training sample with the seed of its random template and tree draw."""

    sample: SeqSample
    seed: tuple[int, ...]  # (run seed, epoch, index in the epoch), or see `SeededSamples`


class SeededSamples(Sequence[SeededSample]):
    """The epoch's samples, each tagged with the seed of its template and tree draw.

    `redraw` (the authors' code): the seed is (run seed, epoch, index), a new draw every
    epoch. Otherwise it is (run seed, user, target, a checksum of the prompt's history), the
    same draw in every epoch, so a frozen encoder's state of the sample can be reused
    (`PromptItemScorer`). Either way a draw depends on nothing else (not on the batch, the
    process count or the global RNG): runs are reproducible and resume draws what the
    uninterrupted run drew.
    """

    def __init__(
        self, samples: EpochSamples, seed: int, *, redraw: bool = True, history_items: int = 0
    ) -> None:
        self.samples = samples
        self.seed = seed % 2**63
        self.redraw = redraw
        self.history_items = history_items

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        return self.samples.begin_epoch(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> SeededSample:  # type: ignore[override]
        sample = self.samples[index]
        if self.redraw:
            return SeededSample(sample, (self.seed, self.samples.epoch, index))
        shown = np.ascontiguousarray(sample.history[-self.history_items :], dtype=np.int64)
        return SeededSample(
            sample, (self.seed, sample.user, sample.target, zlib.crc32(shown.tobytes()))
        )


@register_model
class KP4SR(ConvRecModel):
    name = "kp4sr"
    description = (
        "KP4SR: masked personalised prompt + knowledge-tree prompts under the tree mask, read "
        "by a frozen pretrained encoder with an item head (or a T5 generator) (sequential)"
    )
    Config = KP4SRConfig
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("sequential",)

    def __init__(self, config: KP4SRConfig, task: SeqTask) -> None:
        super().__init__(config, task)  # type: ignore[arg-type]
        dataset = task.dataset
        item_texts = dataset.items if config.item_text == "id" else dataset.item_titles
        if config.backbone == "encoder":
            self.scorer = PromptItemScorer(
                config.encoder,
                item_texts,
                config.pool,
                config.head_dropout,
                free_items=config.item_embedding,
            )
            self.tokenizer = self.scorer.tokenizer
            mask_token = self.tokenizer.mask_token
        else:
            if config.t5 is None:
                self.tokenizer = kp4sr_tokenizer()
                self.t5 = build_compact_t5(config.compact_t5, self.tokenizer)
            else:
                self.t5, self.tokenizer = load_t5(config.t5)
            for module in self.t5.modules():
                if isinstance(module, T5Attention):
                    module.dropout = config.attention_dropout  # read by T5Attention.forward
            mask_token = MASK_TOKEN
            # Identifiers are written as in the prompt (" 12"): target and mention share tokens.
            self.item_tokens: list[list[int]] = self.tokenizer(
                [" " + item for item in item_texts], add_special_tokens=False
            )["input_ids"]
            self.trie = ItemTrie(self.item_tokens, self.tokenizer.eos_token_id)
        self.builder = KnowledgeTreeBuilder.from_dataset(
            dataset,
            self.tokenizer,
            item_text=config.item_text,
            degree=config.degree,
            hop_num=0 if config.knowledge == "none" else config.hop_num,
            max_length=config.max_input_tokens,
            entity_naming=config.entity_naming,
            mask_token=mask_token,
        )

    # -- batches ---------------------------------------------------------------------------

    def _inputs(
        self, samples: Sequence[SeqSample], rngs: Sequence[np.random.Generator | None]
    ) -> Batch:
        """Encoder inputs and structural ids [B, L] (random template and tree with an rng)."""
        users = self.task.dataset.users
        inputs = [
            self.builder.build(
                users[s.user], s.history[-self.config.history_items :], mpp_template(rng), rng
            )
            for s, rng in zip(samples, rngs, strict=True)
        ]
        stacked = stack_tree_inputs(inputs, self.tokenizer.pad_token_id)
        return {
            name: torch.from_numpy(getattr(stacked, name))
            for name in ("input_ids", "kind", "node", "level1")
        }

    def _encoder_inputs(
        self, samples: Sequence[SeqSample], seeds: Sequence[tuple[int, ...] | None]
    ) -> Batch:
        """Backbone encoder: each sample's memo key (None: a draw seen once) and the inputs
        of the samples whose state is not memoised yet (rows `missing`)."""
        keys = [
            None
            if seed is not None and self.config.training_prompts == "redraw"
            else memo_key(s, self.config.history_items, seed)
            for s, seed in zip(samples, seeds, strict=True)
        ]
        missing = [row for row, key in enumerate(keys) if not self.scorer.has_state(key)]
        rngs = [
            None if seeds[row] is None else np.random.default_rng(seeds[row]) for row in missing
        ]
        inputs = self._inputs([samples[row] for row in missing], rngs) if missing else {}
        return {"keys": keys, "missing": torch.tensor(missing, dtype=torch.long), **inputs}

    def collate(self, samples: Sequence[SeqSample]) -> Batch:
        """Evaluation inputs: the test template and deterministic trees; targets are not read."""
        if self.config.backbone == "encoder":
            return self._encoder_inputs(samples, [None] * len(samples))
        return self._inputs(samples, [None] * len(samples))

    def training_batch(self, draws: Sequence[SeededSample]) -> Batch:
        """Inputs with each sample's seeded template and tree, and the targets: item ids
        (backbone encoder) or `labels` [B, T], identifier tokens + eos padded with IGNORE."""
        if self.config.backbone == "encoder":
            batch = self._encoder_inputs([d.sample for d in draws], [d.seed for d in draws])
            return {**batch, "targets": torch.tensor([d.sample.target for d in draws])}
        rngs = [np.random.default_rng(d.seed) for d in draws]
        batch = self._inputs([d.sample for d in draws], rngs)
        targets = [[*self.item_tokens[d.sample.target], self.tokenizer.eos_token_id] for d in draws]
        labels = torch.full((len(targets), max(map(len, targets))), IGNORE, dtype=torch.long)
        for row, target in enumerate(targets):
            labels[row, : len(target)] = torch.tensor(target)
        return {**batch, "labels": labels}

    # -- the network -----------------------------------------------------------------------

    @staticmethod
    def padding_mask(batch: Batch) -> torch.Tensor:
        """[B, L], 1 at real tokens: the decoder's cross-attention mask."""
        return (batch["kind"] != TokenKind.PAD).long()

    def visibility(self, batch: Batch) -> torch.Tensor:
        """[B, L, L] who may attend to whom under the configured `knowledge` mode."""
        kind = batch["kind"]
        if self.config.knowledge == "tree":
            return knowledge_tree_mask(kind, batch["node"], batch["level1"])
        return full_visibility_mask(kind)  # "full", and "none" whose inputs hold the MPP only

    def encoder_attention_mask(self, batch: Batch) -> torch.Tensor:
        """[B, 1, L, L] additive T5 encoder mask of the configured `knowledge` mode."""
        return t5_encoder_attention_mask(self.visibility(batch), self.t5.dtype)

    def encode(self, batch: Batch) -> torch.Tensor:
        """Encoder states [B, L, d]; the 4-D mask goes to the encoder alone (api-notes)."""
        return self.t5.encoder(
            input_ids=batch["input_ids"], attention_mask=self.encoder_attention_mask(batch)
        ).last_hidden_state

    def token_logits(self, decoder_states: torch.Tensor) -> torch.Tensor:
        """The LM head on decoder states [..., d] -> [..., V], as T5's forward applies it."""
        config = self.t5.config
        if getattr(config, "scale_decoder_outputs", config.tie_word_embeddings):
            decoder_states = decoder_states * (config.d_model**-0.5)
        return self.t5.lm_head(decoder_states)

    def next_token_log_probs(
        self, states: torch.Tensor, padding: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        """Beams' next-token log-probabilities [B, K, V] from decoder inputs [B, K, T]."""
        batch, beams, length = tokens.shape
        mask = beam_block_mask(beams, length, states.dtype, states.device)
        decoded = self.t5.decoder(
            input_ids=tokens.reshape(batch, beams * length),
            attention_mask=mask.expand(batch, -1, -1, -1),
            encoder_hidden_states=states,
            encoder_attention_mask=padding,
            use_cache=False,
        ).last_hidden_state
        last = decoded.view(batch, beams, length, -1)[:, :, -1]
        return F.log_softmax(self.token_logits(last).float(), dim=-1)

    @torch.no_grad()
    def beam_search(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Items [B, num_beams], best first (-1 = none), and their log-probabilities."""
        states, padding = self.encode(batch), self.padding_mask(batch)
        return constrained_beam_search(
            self.trie,
            lambda tokens: self.next_token_log_probs(states, padding, tokens),
            batch_size=len(states),
            num_beams=self.config.num_beams,
            start_token_id=self.t5.config.decoder_start_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )

    def recommend(self, batch: Batch) -> torch.Tensor:
        """Scores [B, num_items]: the item head's (backbone encoder), or num_beams - rank for
        the items the beam search returned and -inf elsewhere (backbone t5)."""
        if self.config.backbone == "encoder":
            visible = self.visibility(batch) if len(batch["missing"]) else None
            return self.scorer(batch, visible)
        items, _ = self.beam_search(batch)
        return beam_rank_scores(items, self.task.num_items)

    # -- training --------------------------------------------------------------------------

    def loss(self, batch: Batch) -> torch.Tensor:
        """Per sample [B]: cross-entropy over the catalogue (backbone encoder), or the mean
        token cross-entropy over the identifier tokens and eos (backbone t5)."""
        if self.config.backbone == "encoder":
            return F.cross_entropy(self.recommend(batch), batch["targets"], reduction="none")
        labels = batch["labels"]
        logits = self.t5(
            encoder_outputs=BaseModelOutput(last_hidden_state=self.encode(batch)),
            attention_mask=self.padding_mask(batch),
            decoder_input_ids=self.t5.prepare_decoder_input_ids_from_labels(labels),
            use_cache=False,
        ).logits
        token_loss = F.cross_entropy(
            logits.transpose(1, 2).float(), labels, ignore_index=IGNORE, reduction="none"
        )
        return token_loss.sum(dim=1) / (labels != IGNORE).sum(dim=1)

    def stages(self) -> list[Stage]:
        draws = SeededSamples(
            self.task.train,
            self.task.seed,
            redraw=self.config.training_prompts == "redraw",
            history_items=self.config.history_items,
        )
        return [
            Stage(
                name="train",
                loss=self.loss,
                samples=lambda: draws,
                collate=self.training_batch,
                select_metric="ndcg@10",
                epoch_begin=draws.begin_epoch,
            )
        ]


__all__ = [
    "KP4SR",
    "CompactT5Config",
    "ItemTrie",
    "KP4SRConfig",
    "PromptItemScorer",
    "SeededSample",
    "SeededSamples",
    "T5NotFoundError",
    "beam_block_mask",
    "beam_rank_scores",
    "build_compact_t5",
    "constrained_beam_search",
    "kp4sr_tokenizer",
    "load_t5",
    "memo_key",
]
