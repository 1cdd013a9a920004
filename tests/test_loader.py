"""One loader test over every kind of source the old seven weight entry points took (issue 20 item 1).

Each case builds a model, loads a source through the loader and compares every tensor with what an
independent path says it must be: the source's tensor where the key fits, the model's own tensor
where it does not (decoder of an encoder-only file, a fixed table of another grid, the final norm of
a global-pool classifier), the source's position table interpolated to the model's grid, and a head
re-initialised trunc-normal (std 2e-5, zero bias) when the source has none of this size.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from timm.layers import trunc_normal_

from maekit.models import create_model
from maekit.models.pos_embed import resize_pos_embed

TINY = dict(img_size=32, patch_size=8, depth=2)
MAE = dict(TINY, decoder_depth=1)
HEAD_SEED = 123


def _mae(**kw):
    return create_model("mae_vit_tiny_patch16", **{**MAE, **kw})


def _vit(**kw):
    return create_model("vit_tiny_patch16", **{**TINY, "num_classes": 3, **kw})


def _sources(tmp_path):
    """name -> (model factory, source factory returning (what the loader is given, official-name weights))."""
    torch.manual_seed(7)
    mae, clf = _mae().state_dict(), _vit(num_classes=5).state_dict()
    enc = {k: v for k, v in mae.items() if not k.startswith(("decoder_", "mask_token"))}
    token = _vit(num_classes=3, global_pool=False).state_dict()

    def file(sd, name, wrap=True, extra=None):
        path = tmp_path / name
        torch.save({"model": sd, **(extra or {})} if wrap else sd, path)
        return path

    def linprobe():
        sd = {k: v for k, v in clf.items() if not k.startswith("head.")}
        sd.update({"head.0.running_mean": torch.zeros(192), "head.0.running_var": torch.ones(192),
                   "head.1.weight": clf["head.weight"], "head.1.bias": clf["head.bias"]})
        return sd

    extra = {"epoch": 3, "optimizer": {}, "extra": {"model_name": "mae_vit_tiny_patch16", "model_args": MAE}}
    return {
        # pretraining model targets (load_pretraining_weights, load_weights_into, --init, the demo)
        "official full file -> mae": (_mae, lambda: (file(mae, "full.pth"), mae)),
        "encoder-only state dict -> mae": (_mae, lambda: (enc, enc)),
        "state dict of another grid -> mae": (lambda: _mae(img_size=48),
                                              lambda: ({k: v for k, v in mae.items()}, mae)),
        "global-pool classifier -> mae (--init)": (_mae, lambda: (clf, clf)),
        "training checkpoint -> mae (demo)": (_mae, lambda: (file(mae, "checkpoint-last.pth", extra=extra), mae)),
        # classifier targets (load_pretrained_encoder, classify.load_encoder, load_model(num_classes=))
        "official pretrain file -> vit at 48 px": (lambda: _vit(img_size=48),
                                                   lambda: (file(mae, "mae_pretrain.pth"), mae)),
        "wrapped DDP dict -> vit": (_vit, lambda: ({"model": {"module." + k: v for k, v in enc.items()}}, enc)),
        "classifier of 5 classes -> vit of 3": (_vit, lambda: (file(clf, "ft.pth", wrap=False), clf)),
        "classifier -> vit of as many classes": (lambda: _vit(num_classes=5), lambda: (clf, clf)),
        "token-pool classifier -> token-pool vit": (lambda: _vit(global_pool=False), lambda: (token, token)),
        "linear-probe checkpoint -> vit": (_vit, lambda: (file(linprobe(), "probe.pth"), linprobe())),
    }


CASES = ["official full file -> mae", "encoder-only state dict -> mae", "state dict of another grid -> mae",
         "global-pool classifier -> mae (--init)", "training checkpoint -> mae (demo)",
         "official pretrain file -> vit at 48 px", "wrapped DDP dict -> vit", "classifier of 5 classes -> vit of 3",
         "classifier -> vit of as many classes", "token-pool classifier -> token-pool vit",
         "linear-probe checkpoint -> vit"]


def _expected(model, before, src):
    """What every tensor of ``model`` must hold after loading ``src`` (official names)."""
    out = {}
    reinit = not model.is_pretraining and not (
        "head.weight" in src and src["head.weight"].shape == before["head.weight"].shape)
    for key, own in before.items():
        theirs = src.get(key)
        if key == "pos_embed" and theirs is not None and theirs.shape != own.shape and not model.is_pretraining:
            side = int((theirs.shape[1] - 1) ** 0.5)
            out[key] = resize_pos_embed(theirs, tuple(model.grid_size), num_prefix_tokens=1, old_grid=(side, side))
        elif reinit and key == "head.weight":
            torch.manual_seed(HEAD_SEED)
            out[key] = trunc_normal_(torch.empty_like(own), std=2e-5)
        elif reinit and key == "head.bias":
            out[key] = torch.zeros_like(own)
        elif theirs is not None and theirs.shape == own.shape and not (
                model.is_pretraining and key == "norm.weight" and "fc_norm.weight" in src) and not (
                model.is_pretraining and key == "norm.bias" and "fc_norm.bias" in src):
            out[key] = theirs
        else:
            out[key] = own
    return out


# The entry point each kind of source went through before the loaders were folded into one.
OLD_ENTRY = dict(zip(CASES, ["load_weights_into", "load_pretraining_weights", "load_pretraining_weights",
                             "load_init_weights", "demo", "load_pretrained_encoder", "load_pretrained_encoder",
                             "load_encoder", "load_weights_into", "load_weights_into", "load_encoder"]))


# Those that started a training run (--init, --finetune): no warnings, a classifier may start an MAE.
FOR_TRAINING = ("load_init_weights", "load_encoder", "load_pretrained_encoder", "load_pretraining_weights")


def _load(case, model, source):
    """Every kind goes through the one loader now; a random head or decoder warns only when the
    model is to be used as loaded."""
    from maekit.hub import load_weights_into

    for_training = OLD_ENTRY[case] in FOR_TRAINING
    torch.manual_seed(HEAD_SEED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = load_weights_into(model, source, label="source", head_init_std=2e-5, for_training=for_training,
                                   require_decoder=OLD_ENTRY[case] == "demo")
    expect_warning = not for_training and (report.head_reinitialised or any(
        k.startswith(("decoder_", "mask_token")) for k in report.random))
    assert bool([w for w in caught if issubclass(w.category, UserWarning)]) == expect_warning
    return report


@pytest.mark.parametrize("case", CASES)
def test_one_loader_gives_the_same_weights_for_every_source_kind(tmp_path, case):
    make_model, make_source = _sources(tmp_path)[case]
    torch.manual_seed(1)
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    source, official = make_source()
    report = _load(case, model, source)
    want = _expected(model, before, official)
    got = model.state_dict()
    assert set(got) == set(want)
    wrong = [k for k in got if not torch.equal(got[k], want[k])]
    assert not wrong, f"{case}: tensors differ from the expected: {wrong}"
    assert any(not torch.equal(got[k], before[k]) for k in got), "nothing was loaded"
    assert sorted(report.loaded) == sorted(k for k in got if k in official and official[k].shape == got[k].shape
                                           and k not in report.random) or report.pos_embed_resized
