"""Rerankers behind one interface (base), a registry of presets, and the adapters: the methods
(methods/), the debiasers that wrap them (debiasers/), the prompts they render and parse
(prompts/), and the adapters of other toolkits (toolkits/)."""
