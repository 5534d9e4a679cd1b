"""Two-tower models: term (chapter 4), transformer (chapter 5) and the unified model (chapter 6)."""
