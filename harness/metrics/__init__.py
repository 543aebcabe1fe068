"""Metrics: the registry that declares them, pure kernels (effectiveness, output stability,
position bias), bootstrap intervals and paired statistics."""
