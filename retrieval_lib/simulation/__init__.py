"""Simulated online experiments: the A/B test of chapter 10, played by the world's buyers."""
