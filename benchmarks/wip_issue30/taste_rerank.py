"""Diagnostic (issue 30): how much does a plain word profile of the buyer's engaged listings move recall?

Re-rank a trained unified model's top 1000 by ``cosine + lam * affinity``, where affinity is the TF-IDF
cosine between the words of the listings the buyer engaged with before the request (logs and archive)
and the candidate's words. Reports latent recall@100 by segment (diagnosis) and logged recall@100 on the
validation pairs (the choice signal) for a grid of ``lam``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import retrieval_lib  # noqa: F401  (first: it pins NumPy's kernels, which NumPy reads once, when it loads)

# isort: split
import argparse
import json
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import CountVectorizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import unified_features  # noqa: E402

from retrieval_lib.evaluation.logged import logged_recall  # noqa: E402
from retrieval_lib.evaluation.offline import EvaluationSet, evaluate  # noqa: E402
from retrieval_lib.models.unified import UnifiedConfig, UnifiedRetriever, unified_model  # noqa: E402
from retrieval_lib.serving.exact import exact_top_k  # noqa: E402
from retrieval_lib.text.words import listing_documents, tokenize  # noqa: E402
from retrieval_lib.training.pairs import validation_pairs  # noqa: E402
from retrieval_lib.training.recipes import UNIFIED_TRAIN_CONFIG


def word_matrix(listings: pd.DataFrame, min_df: int = 5) -> sp.csr_matrix:
    """Listings x words, TF-IDF weights of binary occurrence, rows L2-normalised."""
    cv = CountVectorizer(tokenizer=tokenize, lowercase=False, binary=True, min_df=min_df, token_pattern=None)
    x = cv.fit_transform(listing_documents(listings)).astype(np.float32)
    idf = np.log(x.shape[0] / np.maximum(np.asarray(x.sum(0)).ravel(), 1.0)).astype(np.float32)
    x = x @ sp.diags(idf)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
    return sp.diags(1 / np.maximum(norms, 1e-9)) @ x, cv.get_feature_names_out()


def events(observed) -> pd.DataFrame:
    """Observable engagements: user, time key (day, session order) and listing; the archive first."""
    imp = observed.impressions
    eng = imp[imp["click"] | imp["cart"] | imp["purchase"]].merge(
        observed.sessions[["session_id", "user_id", "day"]], on="session_id")
    arch = observed.archive
    return pd.DataFrame({
        "user_id": np.concatenate([arch["user_id"].to_numpy(), eng["user_id"].to_numpy()]),
        "day": np.concatenate([arch["day"].to_numpy(float), eng["day"].to_numpy(float)]),
        "sid": np.concatenate([np.full(len(arch), -1), eng["session_id"].to_numpy()]),
        "listing_id": np.concatenate([arch["listing_id"].to_numpy(), eng["listing_id"].to_numpy()]),
    })


def profiles(ev: pd.DataFrame, sessions: pd.DataFrame, words: sp.csr_matrix, max_items: int = 0,
             mean: bool = False) -> np.ndarray:
    """Dense (n, V): sum of the word rows of each session's buyer's earlier engaged listings, L2-normalised."""
    by_user = {u: g.sort_values(["day", "sid"]) for u, g in ev.groupby("user_id")}
    rows, cols = [], []
    for i, (u, d, s) in enumerate(zip(sessions["user_id"], sessions["day"], sessions["session_id"], strict=True)):
        g = by_user.get(u)
        if g is None:
            continue
        before = (g["day"].to_numpy() < d) | ((g["day"].to_numpy() == d) & (g["sid"].to_numpy() < s))
        lids = g["listing_id"].to_numpy()[before]
        if max_items:
            lids = lids[-max_items:]
        rows.extend([i] * lids.size)
        cols.extend(lids.tolist())
    b = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(sessions), words.shape[0]))
    p = np.asarray((b @ words).todense())
    if mean:
        return p / np.maximum(np.asarray(b.sum(1)), 1.0)
    return p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-9)


def learn_weights(observed, ev, binary: sp.csr_matrix, C: float) -> np.ndarray:
    """Per-word weights of a click model on training-window pages: share_v(history) * has_v(listing)."""
    from sklearn.linear_model import LogisticRegression
    logs = observed.logs("train")
    clicked = logs.groupby("session_id")["click"].transform("any")
    logs = logs[clicked].reset_index(drop=True)
    sess = logs.drop_duplicates("session_id")[["session_id", "user_id", "day"]].reset_index(drop=True)
    t = time.time()
    prof = profiles(ev, sess, binary, mean=True).astype(np.float32)
    row = pd.Series(np.arange(len(sess)), index=sess["session_id"]).loc[logs["session_id"]].to_numpy()
    x = binary[logs["listing_id"].to_numpy()].tocsr().astype(np.float32)
    nnz_row = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    x.data = x.data * prof[row[nnz_row], x.indices]
    pos = sp.csr_matrix((np.ones(len(logs), np.float32), (np.arange(len(logs)), logs["position"].to_numpy())))
    X = sp.hstack([x, pos]).tocsr()
    y = logs["click"].to_numpy()
    print(f"click model: {X.shape}, clicks {y.mean():.3f}, build {time.time() - t:.0f}s", flush=True)
    lr = LogisticRegression(C=C, max_iter=300).fit(X, y)
    print(f"fit {time.time() - t:.0f}s", flush=True)
    return lr.coef_[0, :binary.shape[1]]


class Rerank:
    def __init__(self, base: UnifiedRetriever, ev, words, lam: float, depth: int = 1500, max_items: int = 0):
        self.base, self.ev, self.words, self.lam, self.depth, self.max_items = base, ev, words, lam, depth, max_items
        self.dense = torch.from_numpy(np.asarray(words.todense(), dtype=np.float32))
        self._cache = {}
        self.oracles = None
        self.text_candidates = False
        self.weights = None

    def _top(self, sessions, k):
        depth = max(self.depth, k)
        key = tuple(sessions["session_id"].to_numpy()[:5]) + (len(sessions), depth)
        if key not in self._cache:
            q = self.base.encode_sessions(sessions)
            ids, scores = exact_top_k(q, self.base.listing_vectors, depth, item_ids=self.base.listing_ids)
            aff = np.zeros(ids.shape, np.float32)
            if self.oracles is not None:  # diagnosis only: latent truth
                sids = sessions["session_id"].to_numpy()
                hi, lo = self.oracles
                lat = hi.world.latent
                w = lat.weights
                for s in range(0, len(ids), 512):
                    c = ids[s:s + 512].clip(0)
                    ss = sids[s:s + 512]
                    if not self.text_candidates:
                        aff[s:s + 512] = hi.expected_utility(ss, c) - lo.expected_utility(ss, c)
                        continue
                    bh, bl = hi.belief(ss), lo.belief(ss)
                    tot = np.zeros(c.shape)
                    for f in ("colour", "style", "aesthetic"):
                        val = lat.listings[f][c]
                        d = np.take_along_axis(bh.match[f], val, axis=1) - np.take_along_axis(bl.match[f], val, axis=1)
                        d = np.where(lat.intents[f"expr_{f}"][ss][:, None], 0.0, w.facet * d)
                        if f == "aesthetic":
                            d = d + w.aesthetic * (np.take_along_axis(bh.aesthetic, val, axis=1)
                                                   - np.take_along_axis(bl.aesthetic, val, axis=1))
                        tot += d * self.named[f][c]
                    aff[s:s + 512] = tot
            else:
                if self.weights is not None:
                    prof = profiles(self.ev, sessions, self.binary, self.max_items, mean=True) * self.weights
                    prof = torch.from_numpy(prof.astype(np.float32))
                else:
                    prof = torch.from_numpy(profiles(self.ev, sessions, self.words, self.max_items).astype(np.float32))
                for s in range(0, len(ids), 1024):
                    a = prof[s:s + 1024] @ self.dense.T
                    aff[s:s + 1024] = np.take_along_axis(a.numpy(), ids[s:s + 1024], axis=1)
            self._cache[key] = (ids, np.asarray(scores), aff)
        return self._cache[key]

    def retrieve(self, sessions, k):
        ids, cos, aff = self._top(sessions, k)
        order = np.argsort(-(cos + self.lam * aff), axis=1, kind="stable")[:, :k]
        return np.take_along_axis(ids, order, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="book")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--lams", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--max-items", type=int, default=0)
    parser.add_argument("--history-model", action="store_true")
    parser.add_argument("--text-candidates", action="store_true")
    parser.add_argument("--learned", action="store_true")
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--oracle", default=None, help="diagnosis: rung whose belief re-ranks (latent)")
    args = parser.parse_args()
    t0 = time.time()
    world, fingerprint, features = unified_features(args.preset)
    observed = world.observed
    config = UnifiedConfig() if args.history_model else UnifiedConfig().without("history")
    model, _ = unified_model(features, fingerprint, config, UNIFIED_TRAIN_CONFIG)
    base = UnifiedRetriever(model, features)
    words, vocab = word_matrix(observed.listings)
    ev = events(observed)
    print(f"ready {time.time() - t0:.0f}s, vocab {len(vocab)}, events {len(ev)}", flush=True)
    es = EvaluationSet.build(world, args.split)
    valid = validation_pairs(observed)
    out = []
    rr = Rerank(base, ev, words, 0.0, max_items=args.max_items)
    if args.learned:
        binary = words.copy()
        binary.data[:] = 1.0
        rr.binary = binary
        rr.dense = torch.from_numpy(np.asarray(binary.todense(), dtype=np.float32))
        rr.weights = learn_weights(observed, ev, binary, args.C)
        top = np.argsort(-rr.weights)[:25]
        print("top words:", [(vocab[i], round(float(rr.weights[i]), 2)) for i in top], flush=True)
    if args.oracle:
        from retrieval_lib.evaluation.oracle import LadderOracle
        rr.oracles = (LadderOracle(world, args.oracle), LadderOracle(world, "query"))
        if args.text_candidates:
            from retrieval_lib.evaluation.probes import named_in_text
            rr.text_candidates = True
            rr.named = {f: np.logical_or(*named_in_text(world, f)) for f in ("colour", "style", "aesthetic")}
    for lam in args.lams:
        rr.lam = lam
        summ = evaluate(rr, es).summary()["recall@100"]
        row = {"lam": lam, **summ[["all", "head", "torso", "tail"]].round(4).to_dict(),
               "logged": round(logged_recall(rr, valid), 4)}
        out.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
