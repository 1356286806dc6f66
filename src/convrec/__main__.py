"""`python -m convrec` (and `torchrun ... -m convrec train ...`)."""

from convrec.cli import app

app()
