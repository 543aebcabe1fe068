"""The reranking methods: the controls, listwise generation (RankGPT, FIRST, LLMRank),
pointwise, attention (ICR and its head selection), InvariRank, and Python functions."""
