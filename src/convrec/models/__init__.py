"""One module per method; `convrec.registry` imports a model's module when it is asked for."""

from convrec.models.base import Batch, ConvRecModel, ModelConfig, Stage

__all__ = ["Batch", "ConvRecModel", "ModelConfig", "Stage"]
