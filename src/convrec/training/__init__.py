"""The shared trainer: stages, checkpoints, early stopping, data-parallel processes."""
