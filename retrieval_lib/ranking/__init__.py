"""The ranking stage: observable features of candidates and a learned ranker over them (chapter 10)."""

from retrieval_lib.ranking.features import FEATURES, RankingFeatures
from retrieval_lib.ranking.ranker import (
    GAINS,
    Ranker,
    RankerConfig,
    available,
    logged_pages,
    merge_candidates,
    top_by_score,
)

__all__ = ["FEATURES", "GAINS", "Ranker", "RankerConfig", "RankingFeatures", "available", "logged_pages",
           "merge_candidates", "top_by_score"]
