"""Dataset readers, one module per published format; importing this registers them all."""

from convrec.data.datasets import demo, inspired, movielens, redial  # noqa: F401  (registration)
from convrec.data.datasets.base import (
    READERS,
    ConversationReader,
    DatasetReader,
    get_reader,
    load_dataset,
    register_reader,
)

__all__ = [
    "READERS",
    "ConversationReader",
    "DatasetReader",
    "get_reader",
    "load_dataset",
    "register_reader",
]
