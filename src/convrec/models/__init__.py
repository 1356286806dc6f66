"""Registered models; importing this package registers all of them."""

from convrec.models import kbrd, kp4sr, popularity, sasrec, step, text, unicrs  # noqa: F401  (registration)
from convrec.models.base import Batch, ConvRecModel, ModelConfig, Stage

__all__ = ["Batch", "ConvRecModel", "ModelConfig", "Stage"]
