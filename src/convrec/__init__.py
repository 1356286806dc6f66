"""convrec: knowledge-enhanced conversational recommendation in one code base."""

__version__ = "0.1.0"
