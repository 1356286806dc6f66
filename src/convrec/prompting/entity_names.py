"""Entity names read by the frozen text encoder: a semantic start for the entity table.

UniCRS's entity table starts from random node vectors, so an item that few training
dialogues name keeps a row that says little, and the recommender must learn every item
from its targets alone (INSPIRED: 2,065 training targets over 1,472 items). Each entity's
name — an item's title, any other entity's KG label — is something the frozen text
encoder already understands, and it is the encoder that reads the dialogue. So the table
adds the encoder's (L2-normalised) vector of every name, times a learned scale::

    E_all = EntityEncoder()  +  s * N W          N [num_entities, encoder dim], frozen
                                                 W: identity when the widths agree

With the recommender on the same encoder (`rec_backbone: encoder`), a context that names
a movie, or describes it, starts close to that movie's row before any training: on
INSPIRED validation the untrained cosine alone ranks the target in the top 10 for 19% of
the samples (mostly items repeated from the context), and a learned table on top of it
beats one without it (README, "The score head"; benchmarks/prompted_head_probe.py).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convrec.data.cache import cached, default_cache_dir
from convrec.data.kg import KnowledgeGraph
from convrec.data.schema import ConversationDataset
from convrec.graph.encoders import EntityEncoder
from convrec.graph.rgcn import GraphSettings
from convrec.text.encoder import SentenceEncoder

CACHE_VERSION = 1
# Name vectors by key (see name_vectors), shared by the models of one process (a sweep).
_NAME_VECTORS: dict[str, torch.Tensor] = {}


def entity_name_texts(dataset: ConversationDataset) -> list[str]:
    """What the encoder reads for each entity id: item titles, other entities' labels."""
    kg = dataset.kg
    names = []
    for entity in range(kg.num_entities):
        name = dataset.item_title(entity) if kg.is_item(entity) else kg.label(entity)
        names.append(" ".join(name.split()))
    return names


def name_vectors(encoder: SentenceEncoder, names: list[str]) -> torch.Tensor:
    """The encoder's normalised vectors of `names` [len(names), dim].

    Encoding is slow on a CPU (ReDial's 64k names: minutes), so the vectors are kept in
    the process and in the cache directory, keyed by the names and the encoder's weights.
    """
    digest = hashlib.sha256()
    digest.update(f"entity-names/{CACHE_VERSION}\n".encode())
    for tensor in encoder.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update("\n".join(names).encode())
    key = digest.hexdigest()
    if key not in _NAME_VECTORS:

        def encode() -> np.ndarray:
            vectors = encoder.encode(names, batch_size=256).float().cpu()
            return F.normalize(vectors, dim=-1).numpy()

        path = default_cache_dir() / "entity-names" / f"{key}.pkl"
        _NAME_VECTORS[key] = torch.from_numpy(cached(path, encode))
    return _NAME_VECTORS[key]


class EntityNames(nn.Module):
    """s * N W: the frozen name vectors of every entity at the width the table needs."""

    def __init__(self, vectors: torch.Tensor, out_dim: int, scale: float) -> None:
        super().__init__()
        # Derived from files the config names: recomputed, never stored in checkpoints.
        self.register_buffer("vectors", vectors, persistent=False)
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.proj = None
        if vectors.shape[1] != out_dim:
            self.proj = nn.Linear(vectors.shape[1], out_dim, bias=False)

    @classmethod
    def of_dataset(
        cls, dataset: ConversationDataset, encoder: SentenceEncoder, out_dim: int, scale: float
    ) -> EntityNames:
        """The names of every entity of `dataset` as `encoder` reads them."""
        return cls(name_vectors(encoder, entity_name_texts(dataset)), out_dim, scale)

    def forward(self) -> torch.Tensor:
        """[num_entities, out_dim]."""
        vectors = self.vectors if self.proj is None else self.proj(self.vectors)
        return self.scale * vectors


class NamedEntityEncoder(EntityEncoder):
    """UniCRS's entity encoder whose every output row adds its entity's name (module doc)."""

    def __init__(
        self, kg: KnowledgeGraph, dim: int, out_dim: int, graph: GraphSettings, names: EntityNames
    ) -> None:
        super().__init__(kg, dim, out_dim, graph)
        self.names = names

    def forward(self) -> torch.Tensor:
        return super().forward() + self.names()
