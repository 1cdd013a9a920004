"""Reading tar shards for training and evaluation: :class:`ShardDataset`.

Sources and indexes: :mod:`maekit.data.shards`.

**Equal steps on every rank.** An epoch has a fixed length, the same on every rank: each rank
takes ``num_samples // world_size`` samples, rounded down to whole batches (the loader sets the
batch size through :meth:`ShardDataset.set_batch_size`), split over its workers in whole
batches. Shards are dealt round-robin to ranks, then to workers, after a shuffle seeded by
``(seed, epoch)`` (the same on every rank, new every epoch), so ranks read disjoint shards. A
rank whose shards run out before its quota starts over on them (reshuffled), so no rank runs dry
when shard sizes or counts do not divide evenly; this follows webdataset's advice for multi-node
training (a fixed epoch length, as ``with_epoch`` gives), with repetition limited to the rank's
own shards. With fewer shards than ranks (or workers), every rank (worker) reads the shards and
keeps every k-th sample instead, which stays disjoint. Evaluation splits (``train=False``) are
read once, in order, by every rank.

**Corrupt members** (undecodable image bytes, a sample without an image, a truncated shard)
are skipped with an :class:`~maekit.data.images.UndecodableImageWarning` naming the shard and
key; undecodable images yield ``None``, which the loader's collate drops and counts like a
corrupt file.
"""

from __future__ import annotations

import io
import random
import warnings
import zlib
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from .images import UndecodableImageWarning, load_transformed, mode_for_chans
from .seeding import DatasetView, seeded_item
from .shards import IMAGE_MEMBER_EXTS, ShardIndex, webdataset_module


def plan_slot(num_shards: int, world: int, rank: int, workers: int,
              worker: int) -> tuple[list[int], int, int]:
    """Which shards one (rank, worker) slot reads, and which of their samples it keeps.

    Returns ``(shard_indices, stride, offset)``: the slot keeps sample ``j`` of its stream when
    ``j % stride == offset``. Shards are dealt round-robin (rank first, then worker) while there
    are enough of them; below that, slots share shards and split them by sample.
    """
    shards, stride, offset = list(range(num_shards)), 1, 0
    for parts, part in ((world, rank), (workers, worker)):
        if len(shards) >= parts:
            shards = shards[part::parts]
        else:
            offset, stride = offset + stride * part, stride * parts
    return shards, stride, offset


class ShardDataset(IterableDataset):
    """Samples of tar shards as ``(transform(image), target)`` items (or ``None`` for a corrupt one).

    Args:
        index: shards and counts (:func:`resolve_shards`).
        train: fixed-length, shuffled, repeating epochs split over ranks (module docstring);
            False: one ordered pass over every shard on every rank (evaluation).
        transform: applied to the converted PIL image.
        in_chans: channels of the images handed to ``transform``.
        labelled: read ``.cls`` members as targets (-1 when absent); False: every target is -1.
        seed: shard-order and shuffle-buffer seed (same on every rank; workers and ranks derive
            their own buffer seeds from it).
        shuffle_buffer: samples held by webdataset's shuffle buffer (0: no sample shuffle).
        num_replicas, rank: override torch.distributed (tests, custom launchers).

    Attributes: ``classes`` (class names when known), ``urls``, ``num_samples`` (whole set).
    ``len(dataset)`` is the number of items one rank yields per epoch.
    """

    def __init__(self, index: ShardIndex, *, train: bool = True,
                 transform: Callable[[Any], Any] | None = None,
                 in_chans: int = 3, labelled: bool = True, seed: int = 0, shuffle_buffer: int = 1000,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        mode_for_chans(in_chans)
        webdataset_module()
        self.urls = list(index.urls)
        self.counts = list(index.counts or [None] * len(self.urls))  # None: unknown (remote shards)
        self.num_samples = int(index.num_samples or 0)
        self.classes = index.classes
        if self.classes is not None:
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.train, self.transform, self.in_chans, self.labelled = train, transform, in_chans, labelled
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self._replicas, self._rank = num_replicas, rank
        self.batch_size = 1
        self.epoch = 0
        self._iters = 0
        # Set by build_loader for training: the base of per-sample seeds (module maekit.data.seeding).
        # Each sample's augmentation and mask seed then depend on (seed, epoch, shard, key, pass)
        # only, so a run resumed mid-epoch (whose skipped batches are read again) gets the same
        # crops and masks; None: the global RNGs draw them, as in the references.
        self.sample_seeds: int | None = None
        # Corrupt members are warned about in the first epoch this process trains (workers get a
        # copy each epoch, so their own memory of what was said is lost), then only counted.
        self._first_epoch: int | None = None

    # -- epoch plan ---------------------------------------------------------------------------
    def set_batch_size(self, batch_size: int) -> None:
        """Make each worker's quota whole batches (called by :func:`maekit.data.build_loader`)."""
        self.batch_size = max(1, int(batch_size))
        if self.train and self._rank_quota() == 0:
            world, _ = self._world()
            raise ValueError(f"{self.num_samples} shard samples give {self.num_samples // world} per process, fewer "
                             f"than batch_size={batch_size}: lower batch_size (or raise --num_samples)")

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle the shard order for ``epoch`` (like ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)
        if self._first_epoch is None:
            self._first_epoch = self.epoch

    def _world(self) -> tuple[int, int]:
        from .loader import dist_info

        return dist_info(self._replicas, self._rank)

    def _rank_quota(self) -> int:
        world, _ = self._world()
        per_rank = self.num_samples // world
        return per_rank // self.batch_size * self.batch_size

    def __len__(self) -> int:
        return self._rank_quota() if self.train else self.num_samples

    # -- reading ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[Any, int] | None]:
        world, rank = self._world()
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        # Persistent workers keep their own copy of the dataset, so set_epoch() in the main process
        # does not reach them: they count their passes instead.
        epoch = self.epoch + (self._iters if info is not None else 0)
        self._iters += 1
        shards, stride, offset = plan_slot(len(self.urls), world if self.train else 1,
                                           rank if self.train else 0, workers, worker)
        quota = None
        if self.train:  # a new deal of shards to ranks every epoch, the same on every rank
            deal = list(range(len(self.urls)))
            random.Random(hash((self.seed, epoch, -1))).shuffle(deal)
            shards = [deal[i] for i in shards]
            batches = self._rank_quota() // self.batch_size  # this rank's, shared out over its workers
            quota = (batches // workers + (1 if worker < batches % workers else 0)) * self.batch_size
        rng = random.Random(hash((self.seed, epoch, rank, worker)))
        for sample in islice(self._samples(shards, epoch, stride, offset, rng), quota):
            yield self._decode(sample, epoch)

    def _samples(self, shards: list[int], epoch: int, stride: int, offset: int,
                 rng: random.Random) -> Iterator[dict[str, Any]]:
        """This slot's samples: pass after pass over its shards (one pass when not training), each
        pass in a new seeded shard order and shuffled within the pass by webdataset's buffer, so
        an epoch that fits in one pass reads every sample of the slot once."""
        shuffle = webdataset_module().filters.shuffle
        counter = iter(range(1 << 62))  # position in the slot's stream (+1 per pass boundary)
        cycle = 0
        while True:
            order = list(shards)
            if self.train:
                random.Random(hash((self.seed, epoch, cycle))).shuffle(order)
            before = next(counter)
            raw = ({**s, "__pass__": cycle} for i in order
                   for s in _shard_samples(self.urls[i], self.counts[i]))
            mine = (s for s in raw if next(counter) % stride == offset)
            if self.train and self.shuffle_buffer > 1:
                mine = shuffle(self.shuffle_buffer, min(100, self.shuffle_buffer), rng=rng)(mine)
            yield from mine
            if not self.train:
                return
            if next(counter) == before + 1:  # the pass read nothing at all: no progress possible
                names = [self.urls[i] for i in order[:3]]
                raise RuntimeError(f"the shards {names} yielded no sample; they are empty or unreadable")
            cycle += 1

    def _decode(self, sample: dict[str, Any], epoch: int = 0) -> tuple[Any, ...] | None:
        if sample.get("__missing__"):  # lost in a truncated shard (warned once per shard)
            return None
        if self._first_epoch is None:
            self._first_epoch = epoch
        if epoch != self._first_epoch:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndecodableImageWarning)
                return self._seeded(sample, epoch)
        return self._seeded(sample, epoch)

    def _seeded(self, sample: dict[str, Any], epoch: int) -> tuple[Any, ...] | None:
        if self.sample_seeds is None or not self.train:
            return self._item(sample)
        # A sample's identity: its shard and key (and the pass, when an epoch reads its shards twice).
        index = zlib.crc32(f"{sample.get('__url__')}\0{sample.get('__key__')}".encode()) \
            + (int(sample.get("__pass__", 0)) << 32)
        return seeded_item(lambda: self._item(sample), self.sample_seeds, epoch, index)

    def _item(self, sample: dict[str, Any]) -> tuple[Any, int] | None:
        where = f"{sample.get('__url__')}:{sample.get('__key__')}"
        ext = next((e for e in IMAGE_MEMBER_EXTS if e in sample), None)
        try:
            target = int(sample["cls"]) if self.labelled and "cls" in sample else -1
        except ValueError:
            target = None
        if ext is None or target is None:
            what = ".cls is not an integer" if ext else f"no image member ({'/'.join(IMAGE_MEMBER_EXTS)})"
            warnings.warn(f"skipping shard sample {where}: {what}", UndecodableImageWarning, stacklevel=2)
            return None
        img = load_transformed(io.BytesIO(sample[ext]), self.in_chans, self.transform, name=f"{where}.{ext}")
        return None if img is None else (img, target)

    def in_memory(self) -> "ShardSamples":
        """Every labelled sample of one ordered pass, decoded and transformed, as a map-style dataset
        with ``targets`` and ``classes`` (a k-NN bank or query set: small labelled sets that are
        indexed and sub-sampled per class, which a stream cannot be). Undecodable samples are left out."""
        import copy

        once = copy.copy(self)
        once.train, once.sample_seeds = False, None
        items = [item for item in once if item is not None and item[1] >= 0]
        return ShardSamples(items, self.classes)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(shards={len(self.urls)}, samples={self.num_samples}, "
                f"train={self.train}, in_chans={self.in_chans})")


class ShardSamples(DatasetView):
    """``(image, target)`` items held in memory (:meth:`ShardDataset.in_memory`)."""

    def __init__(self, items: list[tuple[Any, int]], classes: list[str] | None):
        self.dataset, self.classes = items, classes
        self.targets = [int(t) for _, t in items]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.dataset[index]


def _shard_samples(url: str, expected: int | None = None) -> Iterator[dict[str, Any]]:
    """The samples of one shard (webdataset's tar reader and key grouping). The stream is opened
    here, in a ``with`` block, so it is closed even when the epoch stops in the middle of a shard.

    With ``expected`` (the index's count), the samples a truncated or unreadable shard no longer
    holds come out as placeholders that decode to None (warned once, counted like corrupt files),
    so a shard always contributes its indexed number of items.
    """
    wds = webdataset_module()
    found = 0
    try:
        stream = wds.gopen(url, "rb")
    except Exception as err:  # noqa: BLE001 - gopen raises whatever the scheme's opener raises
        _warn_and_continue(err)
    else:
        with stream:
            files = wds.tariterators.tar_file_expander([{"url": url, "stream": stream}],
                                                       handler=_warn_and_continue)
            for sample in wds.tariterators.group_by_keys(files, handler=_warn_and_continue):
                found += 1  # with or without its image: each sample becomes one item (or None)
                yield sample
    if expected is not None and found < expected:
        warnings.warn(f"shard {url}: {found} of its {expected} samples could be read (truncated or "
                      "corrupt); the rest count as skipped", UndecodableImageWarning, stacklevel=2)
        for k in range(expected - found):
            yield {"__url__": url, "__key__": f"missing-{k}", "__missing__": True}


def _warn_and_continue(exn: Exception) -> bool:
    """webdataset error handler: a truncated or unreadable shard is warned about and skipped."""
    warnings.warn(f"skipping unreadable shard data: {type(exn).__name__}: {exn}", UndecodableImageWarning,
                  stacklevel=2)
    return True
