"""The base of every typed settings section (run, train, data, model, LM).

A typo in a key or a number that is not finite (`train.lr=.inf`, `nan`) is an error when
the config is read, not a NaN after an epoch of training.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    """Unknown keys and infinite or NaN numbers are validation errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
