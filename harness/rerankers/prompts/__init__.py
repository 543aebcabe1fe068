"""Prompt templates (loading, validation, rendering, text normalisation) and the parsers
of the answers they ask for."""
