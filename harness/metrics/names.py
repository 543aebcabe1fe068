"""Metric names: the cutoff and the name of every built-in metric, imported by the registry
and by the kernels (which the registry imports when first called), so neither imports the
other."""

from __future__ import annotations

TOP_K = 10
"""The cutoff of every @k metric, of top-k exposure and of RBO's depth."""


def at_k(base: str, k: int = TOP_K) -> str:
    """``ndcg`` -> ``ndcg@10``: the name of a metric cut off at rank ``k``."""
    return f"{base}@{k}"


NDCG = at_k("ndcg")
MRR = at_k("mrr")
NDCG_STD = f"{NDCG}_std"
NDCG_RANGE = f"{NDCG}_range"
NDCG_REFERENCE = f"{NDCG}_reference"
NDCG_FIRST_STAGE = f"{NDCG}_first_stage"
COPY_TAU = "copy_tau"
KENDALL_TAU = "kendall_tau"
RBO = at_k("rbo")
TOP1_AGREEMENT = "top1_agreement"
TOPK_JACCARD = f"top{TOP_K}_jaccard"
SPEARMAN = "spearman"
TOPK_SET_AGREEMENT = f"top{TOP_K}_set_agreement"
PPI = "ppi"
GPI = "gpi"
BEST_RELEVANT_RANK_MEAN = "best_relevant_rank_mean"
BEST_RELEVANT_RANK_VAR = "best_relevant_rank_var"
TIE_RATE = "tie_rate"
PARSE_REPAIR_RATE = "parse_repair_rate"
DISTINCT_RANKINGS = "distinct_rankings"
POSITION_BIAS_MAD = "position_bias_mad"
LATENCY_MS = "latency_ms"
FORWARD_PASSES = "forward_passes"
LATENCY_PER_SET_MS = "latency_per_set_ms"
N_CANDIDATES = "n_candidates"
N_ORDERS = "n_orders"
INVALID_SHARE = "invalid_share"
LATENCY_PERCENTILES = (50, 95)


def latency_percentile(pct: int) -> str:
    """Name of the summary's latency percentile over orders, e.g. ``latency_ms_p50``."""
    return f"{LATENCY_MS}_p{pct}"
