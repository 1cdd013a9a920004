"""Published weights by name: the table and the naming scheme.

A weights name is ``<model>[.<tag>]``. ``<model>`` is any registered model name or alias
(``mae_vit_base_patch16``, ``mae_vit_base_p16``, ``vit_large_patch16``, ``maevit_huge_patch14``...);
``<tag>`` says which published file. Without a tag the model's default tag is used.

=====================================  ==========================================================
name                                    file (``https://dl.fbaipublicfiles.com/mae/`` + ...)
=====================================  ==========================================================
``mae_vit_{base,large}_patch16``,       ``.pretrain`` (default): ``pretrain/mae_pretrain_vit_X.pth``,
``mae_vit_huge_patch14``                encoder only (the decoder stays random: a warning says
                                        so), norm-pix target, 1600 epochs
                                        ``.full``: ``pretrain/mae_pretrain_vit_X_full.pth``, encoder
                                        + decoder, norm-pix target
                                        ``.visualize``: ``visualize/mae_visualize_vit_X.pth``,
                                        encoder + decoder, pixel target (the demo's files)
                                        ``.visualize_ganloss`` (large only)
``vit_{base,large}_patch16``,           ``.finetuned`` (default): ``finetune/mae_finetuned_vit_X.pth``,
``vit_huge_patch14``                    ImageNet-1k classifier (global pool + fc_norm)
                                        ``.pretrain``: the pretrain encoder loaded into the
                                        classifier, head re-initialised (a start for fine-tuning)
=====================================  ==========================================================

So ``mae_vit_base_p16`` (MindFormers) is ``mae_vit_base_patch16.pretrain`` (MindFormers' own
checkpoint is converted from that file) and ``vit_base_p16`` is ``vit_base_patch16.finetuned``.
ConvMAE weights are published on Google Drive only (no direct URL); none are listed: download
them by hand and pass the file (``AutoModel.from_pretrained('convmae_pretrain_vit_base.pth')``).

Checksums: the references publish md5 *prefixes* (6 hex digits) for the pretrain and
fine-tuned files (docs/REFERENCE_RECIPES.md D.1); they are stored as ``md5_prefix`` and checked after a
download. ``sha256`` is None for every entry: no full checksum is published and none is
invented here. The ``_full`` and ``visualize`` files have no known checksum at all and are
only checked for a complete transfer (a warning says so). A 6-digit prefix catches corrupt
or wrong files, not a deliberate forgery; weights are read with ``torch.load(weights_only=True)``.
Extra entries (a private mirror, your own weights) can be added with :func:`register_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..models import canonical_name, is_model

DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/mae/"
"""Where the relative ``path`` of an entry is fetched from; ``MAEKIT_WEIGHTS_URL`` replaces it."""


@dataclass(frozen=True)
class WeightsEntry:
    """One published file and the model it belongs to.

    Attributes:
        name: ``<model>.<tag>`` as shown to users (official model name).
        model_name: the registered model to build (``create_model(model_name, **model_args)``).
        model_args: constructor arguments the file needs (``norm_pix_loss`` for MAE targets).
        path: the file's path relative to the base URL (also its path inside the cache).
        contents: ``'encoder'`` (no decoder), ``'full'`` (encoder + decoder) or ``'classifier'``.
        md5_prefix: leading hex digits of the file's md5 as published, or None.
        sha256: full sha256, or None when unknown (never guessed).
        url: an absolute URL that replaces ``base + path`` (entries hosted elsewhere).
        description: one line for listings.
    """

    name: str
    model_name: str
    path: str
    contents: str
    model_args: dict[str, Any] = field(default_factory=dict)
    md5_prefix: str | None = None
    sha256: str | None = None
    url: str | None = None
    description: str = ""

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


_TABLE: dict[tuple[str, str], WeightsEntry] = {}
_DEFAULT_TAG: dict[str, str] = {}


def _key(name: str) -> tuple[str, str]:
    arch, tag = name.rsplit(".", 1)
    return canonical_name(arch), tag


def register_weights(entry: WeightsEntry, *, default: bool | None = None) -> WeightsEntry:
    """Add an entry, keyed by the canonical model name and the tag after the last dot.

    Args:
        entry: the file and its model.
        default: make this tag what the bare model name loads (True), never (False), or only
            when the model has no default yet (None).
    """
    if "." not in entry.name:
        raise ValueError(f"weights name {entry.name!r} must be '<model>.<tag>'")
    key = _key(entry.name)
    _TABLE[key] = entry
    if default or (default is None and key[0] not in _DEFAULT_TAG):
        _DEFAULT_TAG[key[0]] = key[1]
    return entry


def unregister_weights(name: str) -> None:
    """Remove ``<model>.<tag>`` (and its default-tag role)."""
    key = _key(name)
    _TABLE.pop(key, None)
    if _DEFAULT_TAG.get(key[0]) == key[1]:
        del _DEFAULT_TAG[key[0]]


def _official() -> None:
    """The official MAE files of docs/REFERENCE_RECIPES.md D.1 (md5 prefixes as published there)."""
    norm_pix, pixel = {"norm_pix_loss": True}, {"norm_pix_loss": False}
    # size, MAE model, classifier, md5 prefixes of the pretrain and fine-tuned files
    for size, mae, vit, md5_pretrain, md5_finetuned in (
            ("base", "mae_vit_base_patch16", "vit_base_patch16", "8cad7c", "1b25e9"),
            ("large", "mae_vit_large_patch16", "vit_large_patch16", "b8b06e", "51f550"),
            ("huge", "mae_vit_huge_patch14", "vit_huge_patch14", "9bdbb0", "2541f2")):
        s = size[0].upper()
        pre = f"pretrain/mae_pretrain_vit_{size}.pth"
        entries = [
            (WeightsEntry(f"{mae}.pretrain", mae, pre, "encoder", norm_pix, md5_pretrain,
                          description=f"MAE-{s} pretrained 1600 ep, encoder only (random decoder), "
                                      "norm-pix target"), True),
            (WeightsEntry(f"{mae}.full", mae, f"pretrain/mae_pretrain_vit_{size}_full.pth", "full", norm_pix,
                          description=f"MAE-{s} pretrained, encoder + decoder, norm-pix target"), False),
            (WeightsEntry(f"{mae}.visualize", mae, f"visualize/mae_visualize_vit_{size}.pth", "full", pixel,
                          description=f"MAE-{s} encoder + decoder, pixel target (demo weights)"), False),
            (WeightsEntry(f"{vit}.finetuned", vit, f"finetune/mae_finetuned_vit_{size}.pth", "classifier",
                          {"num_classes": 1000}, md5_finetuned,
                          description=f"ViT-{s} fine-tuned on ImageNet-1k"), True),
            (WeightsEntry(f"{vit}.pretrain", vit, pre, "encoder", {}, md5_pretrain,
                          description=f"ViT-{s} with the MAE pretrain encoder, head re-initialised"), False),
        ]
        for entry, default in entries:
            register_weights(entry, default=default)
    register_weights(WeightsEntry(
        "mae_vit_large_patch16.visualize_ganloss", "mae_vit_large_patch16",
        "visualize/mae_visualize_vit_large_ganloss.pth", "full", pixel,
        description="MAE-L encoder + decoder, pixel target plus a GAN loss (demo weights)"), default=False)


_official()


def split_name(name: str) -> tuple[str, str | None]:
    """``'mae_vit_base_patch16.full'`` -> ('mae_vit_base_patch16', 'full'); no tag -> None."""
    if "." in name and not is_model(name):
        arch, tag = name.rsplit(".", 1)
        return arch, tag
    return name, None


def lookup(name: str) -> WeightsEntry | None:
    """The entry for ``<model>[.<tag>]``, None when the model has no published weights.

    Raises:
        ValueError: unknown model, or a tag that this model does not have.
    """
    arch, tag = split_name(name)
    canon = canonical_name(arch)  # raises ValueError (with suggestions) for unknown models
    if tag is None:
        tag = _DEFAULT_TAG.get(canon)
        return None if tag is None else _TABLE[(canon, tag)]
    entry = _TABLE.get((canon, tag))
    if entry is None:
        tags = sorted(t for (m, t) in _TABLE if m == canon)
        have = f"; it has {', '.join(tags)}" if tags else "; no published weights are listed for it"
        raise ValueError(f"no weights {tag!r} for {arch!r}{have} (maekit.hub.list_pretrained() lists all)")
    return entry


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Names with published weights (``'<model>.<tag>'``), sorted; ``pattern`` is a shell pattern."""
    import fnmatch

    names = sorted({e.name for e in _TABLE.values()})
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def entry_for_url(url: str) -> WeightsEntry | None:
    """The table entry whose file a URL points to (to reuse its checksum), if any."""
    for entry in _TABLE.values():
        if (entry.url and url == entry.url) or url.endswith("/" + entry.path):
            return entry
    return None
