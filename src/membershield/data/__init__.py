"""Records in play: loading tables and assembling the audit pool."""

from membershield.data.io import load_table
from membershield.data.pool import Pool, build_pool, fingerprint_frame

__all__ = ["Pool", "build_pool", "fingerprint_frame", "load_table"]
