"""Graph encoders over the knowledge graph."""
