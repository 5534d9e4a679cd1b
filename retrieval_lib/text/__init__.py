"""Text processing: words and tokens, hashed n-gram features, a deterministic WordPiece tokenizer."""
