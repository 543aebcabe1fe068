"""Adapters for the reranking toolkits people already use (docs/toolkits.md).

One module per toolkit; each imports its toolkit only when a preset uses it, so the core
never pays for it. :class:`~harness.rerankers.toolkits.base.ToolkitReranker` does what they
share: it hands the toolkit each shown order as it is, times and counts its calls, and records
the toolkit's name, version and settings in the run's provenance.
"""
