"""Model backends: what methods need from a model (:mod:`harness.backends.base`), implemented
on transformers and vLLM. Importing this package loads no model library."""
