"""The data layer: schema, knowledge graph, dataset readers, sample builders, cache.

Nothing here imports from the layers above (models, training, cli).
"""

from convrec.data.errors import DataFormatError
from convrec.data.kg import KnowledgeGraph
from convrec.data.schema import ConversationDataset, Dialogue, Mention, Turn

__all__ = [
    "ConversationDataset",
    "DataFormatError",
    "Dialogue",
    "KnowledgeGraph",
    "Mention",
    "Turn",
]
