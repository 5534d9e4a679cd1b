"""retrieval_lib: a complete personalized embedding-based product retrieval system.

It follows Jha et al. (2023), *Unified Embedding Based Personalized Retrieval in Etsy Search*.

The package is grouped by role, one level deep: ``marketplace`` (the synthetic world), ``text``
(words, hashed n-grams, word pieces), ``baselines`` (BM25, popularity), ``evaluation`` (metrics,
offline evaluation, logged recall, probes, the oracle ceiling, uncertainty), ``encoders`` (graph,
term, transformer), ``training`` (pairs, negative sources, losses, the one trainer, doc2query
pre-training), ``models`` (the term, transformer and unified two-tower models), ``features`` (numeric,
location, history, the unified model's inputs), ``serving`` (search results, exact search, HNSW, the
request-level ``Retriever``) and ``infra`` (cache, results, progress bars, plots, validation, pinned
numerics). The book's preface maps each chapter to its files.

Importing the package pins the numeric libraries' code paths (:mod:`retrieval_lib.infra.numerics`), so
import it before torch and NumPy to get the book's exact figures.
"""

from retrieval_lib.infra.numerics import pin as _pin

_pin()

__version__ = "0.1.0"
