"""Shared mechanisms: the cost protocol, cost-aware buffers and base classes, evaluation, callbacks, logging."""
