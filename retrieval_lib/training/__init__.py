"""Training: pairs from the logs, negative sources, losses, the one trainer, doc2query pre-training."""
