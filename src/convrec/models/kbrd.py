"""KBRD-style recommender: an R-GCN over the knowledge graph, attention over the context.

Chen et al. 2019, "Towards Knowledge-Based Recommender Dialog System"; CRSLab's KBRD is the
reference implementation. The user is the attention-pooled graph embedding of the entities
mentioned so far in the dialogue; an item scores its dot product with the user plus a bias::

    entity table --R-GCN(KG)--> h                       [num_entities, dim]
    h[context entities] --self-attention--> u           [B, dim]   (zero without entities)
    scores = u @ h[catalogue]^T + item_bias             [B, num_items]

The R-GCN runs over the whole graph on every forward, so every entity embedding is trained
through its neighbours, including items that the training dialogues never mention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from convrec.data.samples import RecSample
from convrec.data.tasks import RecTask
from convrec.graph.rgcn import GraphSettings, RelationalGraphConv
from convrec.models.base import Batch, CatalogueRecommender, ModelConfig
from convrec.registry import register_model


class KBRDConfig(ModelConfig, GraphSettings):
    dim: int = Field(128, ge=1, description="size of entity embeddings and of the user vector")
    attention_dim: int = Field(128, ge=1, description="hidden size of the self-attention scorer")
    max_context_entities: int = Field(
        32, ge=1, description="keep only the most recently first-mentioned context entities"
    )
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="dropout on the user vector")
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="label smoothing of the cross-entropy over items"
    )


class SelfAttentionPooling(nn.Module):
    """KBRD's pooling: a = softmax_i(w2^T tanh(W1 h_i)) over unmasked positions; u = sum a_i h_i.

    A row without any unmasked position pools to the zero vector.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden, bias=False)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """states [B, L, dim], mask [B, L] bool -> pooled [B, dim]."""
        logits = self.score(torch.tanh(self.proj(states))).squeeze(-1)
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        # Multiplying by the mask (not -inf logits) keeps empty rows at zero, without NaN.
        weights = torch.softmax(logits, dim=-1) * mask
        return torch.einsum("bl,bld->bd", weights, states)


@register_model
class KBRD(CatalogueRecommender):
    name = "kbrd"
    description = "KBRD: R-GCN entity embeddings pooled by self-attention over the context"
    Config = KBRDConfig

    def __init__(self, config: KBRDConfig, task: RecTask) -> None:
        super().__init__(config, task)
        kg = task.kg
        self.register_buffer("items", torch.from_numpy(kg.items), persistent=False)
        self.entity_embedding = nn.Embedding(kg.num_entities, config.dim)
        self.rgcn = RelationalGraphConv.for_graph(kg, config, config.dim)
        self.attention = SelfAttentionPooling(config.dim, config.attention_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.item_bias = nn.Parameter(torch.zeros(task.num_items))
        nn.init.xavier_uniform_(self.entity_embedding.weight)

    def collate(self, samples: Sequence[RecSample]) -> Batch:
        """Context entity ids right-padded to the longest context, with a mask."""
        limit = self.config.max_context_entities
        contexts = [torch.tensor(s.context_entities[-limit:], dtype=torch.long) for s in samples]
        lengths = torch.tensor([len(c) for c in contexts])
        entities = pad_sequence(contexts, batch_first=True)  # [B, L], L may be 0
        return {
            "entities": entities,
            "mask": torch.arange(entities.shape[1])[None, :] < lengths[:, None],
        }

    def encode_graph(self) -> torch.Tensor:
        """Knowledge-aware embeddings of every entity [num_entities, dim]."""
        return self.rgcn(self.entity_embedding.weight)

    def recommend(self, batch: Batch) -> torch.Tensor:
        entity_states = self.encode_graph()
        entities = batch["entities"].to(entity_states.device)
        mask = batch["mask"].to(entity_states.device)
        user = self.attention(entity_states[entities], mask)
        return F.linear(self.dropout(user), entity_states[self.items], self.item_bias)
