"""retrieval_lib: a complete personalized embedding-based product retrieval system.

It follows Jha et al. (2023), *Unified Embedding Based Personalized Retrieval in Etsy Search*.

One module per concept, in the order of the book: ``marketplace`` (the synthetic world),
``text``, ``lexical`` and ``popularity`` (baselines), ``metrics`` and ``evaluation`` (how we measure),
``graph`` (node2vec), ``term`` (hashed n-gram embeddings), ``train`` (the one trainer),
``transformer``, ``pretraining`` and ``transformer_tower`` (doc2query), ``features``, ``towers`` and
``unified`` (the unified model), ``knn``, ``ann``, ``serving`` and ``retriever`` (search),
``results`` (the figures the book quotes) and ``progress`` (progress bars a built book hides).
"""

__version__ = "0.1.0"
