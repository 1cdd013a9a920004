"""Fine-tuning / linear-probing pieces of the tasks: mixup targets, criteria, the probe head."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn as nn
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

import maekit
from maekit.tasks.classify import add_linear_probe_head, build_mixup, classification_criterion


def mixup_args(**kw):
    base = dict(mixup=0.8, cutmix=1.0, cutmix_minmax=None, mixup_prob=1.0, mixup_switch_prob=0.5,
                mixup_mode="batch", smoothing=0.1, batch_size=8)
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("switch", [0.0, 1.0])  # 0: always mixup, 1: always cutmix
def test_mixup_cutmix_targets_sum_to_one_with_smoothing(switch):
    torch.manual_seed(0)
    k, eps = 10, 0.1
    fn = build_mixup(mixup_args(mixup_switch_prob=switch), k)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    xm, t = fn(x, y)
    assert xm.shape == x.shape and t.shape == (8, k)
    torch.testing.assert_close(t.sum(1), torch.ones(8))
    off, on = eps / k, 1 - eps + eps / k
    assert t.min() >= off - 1e-6 and t.max() <= on + 1e-6
    # mixing with the reversed batch: sample i mixes classes i and 7 - i, lam the same for the batch
    lam = (t[0, 0] - off) / (on - off)
    for i in range(8):
        expect = torch.full((k,), off)
        expect[y[i]] += lam * (on - off)
        expect[y[7 - i]] += (1 - lam) * (on - off)
        torch.testing.assert_close(t[i], expect)


def test_no_mixing_gives_smoothed_one_hot_and_criteria():
    fn = build_mixup(mixup_args(mixup_prob=0.0), 5)
    _, t = fn(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    expect = torch.full((4, 5), 0.1 / 5)
    expect[torch.arange(4), torch.tensor([0, 1, 2, 3])] = 1 - 0.1 + 0.1 / 5
    torch.testing.assert_close(t, expect)
    assert build_mixup(mixup_args(mixup=0.0, cutmix=0.0), 5) is None
    with pytest.raises(ValueError, match="even --batch_size"):
        build_mixup(mixup_args(batch_size=7), 5)
    assert isinstance(classification_criterion(mixup_fn=fn, smoothing=0.1), SoftTargetCrossEntropy)
    assert isinstance(classification_criterion(mixup_fn=None, smoothing=0.1), LabelSmoothingCrossEntropy)
    assert type(classification_criterion(mixup_fn=None, smoothing=0.0)) is nn.CrossEntropyLoss


@pytest.mark.parametrize("name", ["vit_tiny_patch16", "convvit_small_patch16"])
def test_linear_probe_head_is_reference(name):
    m = maekit.create_model(name, img_size=32, num_classes=7, global_pool=False)
    add_linear_probe_head(m)
    bn, fc = m.head
    assert isinstance(bn, nn.BatchNorm1d) and not bn.affine and bn.eps == 1e-6 and fc.out_features == 7
    trainable = sorted(n for n, p in m.named_parameters() if p.requires_grad)
    assert trainable == ["head.1.bias", "head.1.weight"]
    assert set(m.state_dict()) >= {"head.0.running_mean", "head.0.running_var", "head.0.num_batches_tracked"}
    m.train()(torch.randn(4, 3, 32, 32))
    assert int(m.head[0].num_batches_tracked) == 1  # train mode: BatchNorm uses and tracks batch statistics
