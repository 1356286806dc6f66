"""Text-only recommender: a pretrained sentence encoder reads the dialogue, a linear layer
scores the catalogue.

The "BERT" row of the CRS tables (MSCRS Table 2): no knowledge graph, only the words::

    "User: ... System: ... User: ..."  --sentence encoder-->  c     [B, dim]
    scores = c @ item_table^T + item_bias                           [B, num_items]

Long contexts keep their latest tokens. Frozen (the default), the encoder is a fixed
feature extractor: each distinct context is encoded once and memoised, so an epoch costs
one linear layer. Fine-tuned, the encoder trains with the item table (minutes per INSPIRED
epoch on a CPU; meant for a GPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn

from convrec.data.samples import RecSample
from convrec.data.tasks import RecTask
from convrec.models.base import Batch, CatalogueRecommender, ModelConfig, keep_out_of_checkpoints
from convrec.registry import register_model
from convrec.text.dialogue import render_context
from convrec.text.encoder import DEFAULT_ENCODER, SentenceEncoder


class TextConfig(ModelConfig):
    encoder: str = Field(
        DEFAULT_ENCODER,
        description="sentence-transformers model: bundled name, local directory, or cached name",
    )
    max_tokens: int = Field(
        256, ge=8, le=512, description="context tokens kept; the most recent ones survive"
    )
    freeze_encoder: bool = Field(
        True,
        description="keep the encoder fixed and memoise context vectors; false fine-tunes it "
        "(minutes per INSPIRED epoch on a CPU; the fresh item table needs a larger learning "
        "rate than the encoder)",
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the context vector")
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="label smoothing of the cross-entropy over items"
    )


@register_model
class TextRecommender(CatalogueRecommender):
    name = "text"
    description = "Sentence encoder over the dialogue text and a linear item scorer (BERT row)"
    Config = TextConfig

    def __init__(self, config: TextConfig, task: RecTask) -> None:
        super().__init__(config, task)
        self.encoder = SentenceEncoder(config.encoder, max_tokens=config.max_tokens, keep="end")
        self.dropout = nn.Dropout(config.dropout)
        # Its weight rows are the learned item table, its bias the item bias.
        self.item_scorer = nn.Linear(self.encoder.dim, task.num_items)

        # A plain dict, not a buffer: derived data that must stay out of checkpoints.
        self._context_cache: dict[str, torch.Tensor] = {}
        if config.freeze_encoder:
            # Frozen weights are the pretrained files that `config.encoder` names, so they
            # stay out of checkpoints (2 MB instead of 90 MB).
            # A checkpoint that does carry encoder weights makes every memoised vector stale.
            self.encoder.requires_grad_(False)
            keep_out_of_checkpoints(self, "encoder", on_load=self.clear_cache)

    def clear_cache(self) -> None:
        self._context_cache.clear()

    def train(self, mode: bool = True) -> TextRecommender:
        """A frozen encoder always stays in eval mode (no dropout), so its vectors are fixed."""
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()
        return self

    def collate(self, samples: Sequence[RecSample]) -> Batch:
        return {
            "contexts": [render_context(s.context_turns) for s in samples],
        }

    def encode_contexts(self, contexts: Sequence[str]) -> torch.Tensor:
        """Context vectors [B, dim]: memoised when the encoder is frozen, with gradients if not."""
        if not self.config.freeze_encoder:
            return self.encoder(self.encoder.tokenize(contexts))["sentence_embedding"]
        missing = [c for c in dict.fromkeys(contexts) if c not in self._context_cache]
        if missing:
            vectors = self.encoder.encode(missing).cpu()
            self._context_cache.update(zip(missing, vectors, strict=True))
        device = self.item_scorer.weight.device
        return torch.stack([self._context_cache[c] for c in contexts]).to(device)

    def recommend(self, batch: Batch) -> torch.Tensor:
        return self.item_scorer(self.dropout(self.encode_contexts(batch["contexts"])))
