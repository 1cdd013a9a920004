"""Moved to :mod:`maekit.hub.cache`; re-exported for code not yet switched (removed later)."""

from ..hub.cache import *  # noqa: F401,F403
from ..hub.cache import (ChecksumError, WeightsUnavailableError, base_url, cache_dir, download, entry_cache_path,  # noqa: F401
                         entry_url, fetch_url, fetch_weights, file_digests, is_offline, is_url, read_url_bytes,
                         url_cache_path, verify_file)
