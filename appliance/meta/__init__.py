"""Metadata layer (DESIGN.md §5): one interface, engine-specific code behind it."""

from .base import KV, Compare, Delete, LeaseNotFound, MetaError, MetaStore, Put, TxnResult, prefix_end
from .sqlite import SqliteMeta

__all__ = ["KV", "Compare", "Delete", "LeaseNotFound", "MetaError", "MetaStore", "Put",
           "TxnResult", "prefix_end", "SqliteMeta"]
