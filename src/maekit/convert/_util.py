"""Small shared helpers of the converters: key bookkeeping, the linear-probe head fold and
:class:`NameMap`, the one renamer between the official names and a framework's (HF, MindFormers).

File writes (atomic files and folders, safetensors-ready tensors) live in :mod:`maekit.fileio`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import torch

from .errors import ConversionError

StateDict = dict[str, torch.Tensor]


def count_blocks(keys: Iterable[str], prefix: str) -> int:
    """How many blocks ``{prefix}.{i}.*`` the keys hold (their indices must be 0..n-1)."""
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    idx = sorted({int(m.group(1)) for k in keys if (m := pat.match(k))})
    if idx and idx != list(range(len(idx))):
        raise ConversionError(f"block indices of {prefix!r} are not 0..n-1: {idx}")
    return len(idx)


def describe_keys(keys: Iterable[str], limit: int = 6) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit]) or "none"
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def fold_linprobe_head(sd: Mapping[str, torch.Tensor], eps: float = 1e-6) -> tuple[StateDict, str | None]:
    """Fold the official linear-probe head (BatchNorm1d(affine=False, eps=1e-6) + Linear, keys
    ``head.0.*`` / ``head.1.*``) into one Linear ``head.*`` (eval-mode maths; not invertible)."""
    if "head.1.weight" not in sd:
        return dict(sd), None
    out = {k: v for k, v in sd.items() if not k.startswith("head.")}
    w, b = sd["head.1.weight"].double(), sd["head.1.bias"].double()
    if "head.0.running_mean" in sd:
        mean, var = sd["head.0.running_mean"].double(), sd["head.0.running_var"].double()
        scale = 1.0 / torch.sqrt(var + eps)
        if "head.0.weight" in sd:  # affine BatchNorm (not the official one, but foldable)
            scale = scale * sd["head.0.weight"].double()
        shift = -mean * scale + (sd["head.0.bias"].double() if "head.0.bias" in sd else 0.0)
        w, b = w * scale[None, :], b + w @ shift
    dtype = sd["head.1.weight"].dtype
    out["head.weight"], out["head.bias"] = w.to(dtype), b.to(dtype)
    return out, (
        "the linear-probe head (BatchNorm1d without affine + Linear) was folded into one Linear "
        "'head' (same eval-mode outputs up to rounding; the BatchNorm statistics are not kept)"
    )


Rules = dict  # official name template -> a framework's (a str, or a tuple of 3 for the fused qkv)
_INDEX = re.compile(r"\.(\d+)\.")


def _template(name: str) -> tuple[str, str | None]:
    """(the name with its block index as ``{}``, the index): ``blocks.3.mlp.fc1.weight`` ->
    (``blocks.{}.mlp.fc1.weight``, ``'3'``)."""
    m = _INDEX.search(name)
    return (name, None) if m is None else (f"{name[:m.start()]}.{{}}.{name[m.end():]}", m[1])


def prefixed(rules: Rules, official: str, foreign: str) -> Rules:
    """``rules`` with ``official`` / ``foreign`` put before the names of each side."""
    def pre(v: str | tuple[str, ...]) -> str | tuple[str, ...]:
        return tuple(foreign + n for n in v) if isinstance(v, tuple) else foreign + v
    return {official + k: pre(v) for k, v in rules.items()}


class NameMap:
    """Official parameter names <-> a framework's, from one table of name templates.

    In a template ``{}`` is the block index, ``{p}`` (both sides) ``weight`` / ``bias``, and ``{g}`` (the
    framework's side) the LayerNorm ``gamma`` / ``beta`` of that ``{p}``; a tuple of three names is the
    fused ``qkv`` split into its query / key / value rows. ``transposed``: official names (templates)
    whose 2-D weights the framework stores [in, out].
    """

    def __init__(self, rules: Rules, transposed: Iterable[str] = ()):
        self.table: dict[str, str | tuple[str, ...]] = {}
        for official, foreign in rules.items():
            for p, g in (("weight", "gamma"), ("bias", "beta")) if "{p}" in official else [("", "")]:
                def fill(n: str, p: str = p, g: str = g) -> str:
                    return n.replace("{p}", p).replace("{g}", g)
                split = isinstance(foreign, tuple)
                self.table[fill(official)] = tuple(map(fill, foreign)) if split else fill(foreign)
        self.back = {n: (o, j if isinstance(f, tuple) else None) for o, f in self.table.items()
                     for j, n in enumerate(f if isinstance(f, tuple) else (f,))}
        self.transposed = set(transposed)

    def knows(self, name: str) -> bool:
        """Whether ``name`` is one of the framework's names in this table."""
        return _template(name)[0] in self.back

    def _layout(self, template: str, t: torch.Tensor) -> torch.Tensor:
        return t.t().contiguous() if template in self.transposed and t.ndim == 2 else t

    def to_foreign(self, sd: Mapping[str, torch.Tensor]) -> tuple[StateDict, list[str]]:
        """(the framework's names and layouts, the official keys it has no name for)."""
        out: StateDict = {}
        bad = []
        for key, t in sd.items():
            template, i = _template(key)
            name = self.table.get(template)
            if name is None:
                bad.append(key)
            elif isinstance(name, tuple):
                out.update((n.format(i), part.contiguous()) for n, part in zip(name, t.chunk(3, dim=0)))
            else:
                out[name.format(i)] = self._layout(template, t)
        return out, bad

    def to_official(self, sd: Mapping[str, torch.Tensor],
                    path: str | os.PathLike = "") -> tuple[StateDict, list[str]]:
        """(official names and layouts, the framework's names this table does not know)."""
        out: StateDict = {}
        parts: dict[str, dict[int, torch.Tensor]] = {}
        unknown = []
        for name, t in sd.items():
            template, i = _template(name)
            if template not in self.back:
                unknown.append(name)
                continue
            official, j = self.back[template]
            if j is None:
                out[official.format(i)] = self._layout(official, t)
            else:
                parts.setdefault(official.format(i), {})[j] = t
        for key, got in parts.items():
            if len(got) != 3:
                names = [n.format(_template(key)[1]) for n in self.table[_template(key)[0]]]
                raise ConversionError(f"{key} is stored as {', '.join(names)}: "
                                      f"only {', '.join(names[j] for j in sorted(got))} found", path)
            out[key] = torch.cat([got[j] for j in range(3)], dim=0)
        return out, unknown
