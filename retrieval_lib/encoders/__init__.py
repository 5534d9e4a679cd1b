"""Encoders that turn listings and queries into vectors: graph (node2vec), term (hashed n-grams), transformer."""
