"""Weights by name, the download cache and the one loader.

>>> import maekit
>>> model = maekit.load_model("mae_vit_large_patch16.visualize")     # doctest: +SKIP
>>> model = maekit.load_model("runs/ft/checkpoint-99.pth")            # doctest: +SKIP

- :mod:`.table`: published weights, ``<model>.<tag>`` names (``register_weights`` adds yours);
- :mod:`.cache`: downloads into ``$MAEKIT_HOME`` (checksums, resume, ``MAEKIT_OFFLINE``);
- :mod:`.load`: ``load_model(source)`` for names, folders, files of any format, URLs.
"""

from .cache import ChecksumError, WeightsUnavailableError, cache_dir, download
from .export import export_model
from .load import DecoderNotLoadedWarning, load_config, load_model, load_weights_into, resolve
from .push import model_card, push_to_hub
from .table import WeightsEntry, list_pretrained, lookup, register_weights, split_name, unregister_weights

__all__ = [
    "ChecksumError", "DecoderNotLoadedWarning", "WeightsEntry", "WeightsUnavailableError", "cache_dir", "download",
    "export_model", "model_card", "push_to_hub",
    "list_pretrained", "load_config", "load_model", "load_weights_into", "lookup", "register_weights", "resolve",
    "split_name", "unregister_weights",
]
