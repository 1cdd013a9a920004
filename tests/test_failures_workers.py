"""Exact resume with DataLoader workers (issue 15, with H7's per-sample augmentation and mask
seeds from (seed, epoch, index), maekit.data.seeding): SIGTERM at random steps, then
``--resume auto``, with ``--num_workers 2`` and ``--augment reference``: the weights equal an
uninterrupted run's, bit for bit.
"""

from __future__ import annotations

import random

import pytest
import torch

from test_failures import args, cli, epochs_logged, interrupt_then_finish, tiny, weights  # noqa: F401


@pytest.mark.parametrize("workers", ["2"])
def test_sigterm_at_random_steps_with_workers_then_resume_is_bitwise_exact(digit_folders, tmp_path, tiny,
                                                                            workers):
    data = digit_folders / "unlabelled"
    straight, split = tmp_path / "straight", tmp_path / "split"
    extra = ["--augment", "reference", "--save_every", "0", "--num_workers", workers]
    res = cli(*args(tiny, data, straight, *extra, epochs=2))
    assert res.returncode == 0, res.stderr[-3000:]
    rng = random.Random(7)
    assert interrupt_then_finish(args(tiny, data, split, *extra, epochs=2),
                                 [rng.randint(1, 5) for _ in range(2)]) >= 1
    a, b = weights(straight / "checkpoint-last.pth"), weights(split / "checkpoint-last.pth")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert epochs_logged(split) == [0, 1]
