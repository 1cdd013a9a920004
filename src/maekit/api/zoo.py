"""Moved to :mod:`maekit.hub.table`; re-exported for code not yet switched (removed later)."""

from ..hub.table import *  # noqa: F401,F403
from ..hub.table import DEFAULT_BASE_URL, WeightsEntry, entry_for_url, list_pretrained, lookup, register_weights, split_name, unregister_weights  # noqa: F401
