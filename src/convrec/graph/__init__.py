"""Graph encoders over the knowledge graph (torch-geometric)."""
