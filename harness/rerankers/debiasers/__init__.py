"""Debiasers: meta-rerankers that wrap another reranker preset and are rerankers
themselves (permutation self-consistency, bootstrapping, SGS, STELLA)."""
