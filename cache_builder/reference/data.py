"""Training data for the reference system, read from DCASE folders.

Conventions:
    * A split folder holds ``soundscape/<name>.wav`` (4-channel FOA, 32 kHz) and
      ``oracle_target/<name>_<i>_<Label>.wav`` (mono dry source at channel 0, same length);
      names are matched exactly by `casdri.layout.parse_stem_name`. A soundscape without
      oracle files is a zero-target clip.
    * Tagger targets: the reference class indices sorted ascending, padded with silence
      (index ``C``) to ``n_tracks``.
    * Separator items are random crops of ``crop_samples``, centred near the energy of one
      target (so short events are not missed). The query holds the oracle labels in canonical
      order (sorted by class index); some items drop one uniquely-labelled source, and some
      add one absent class or leave the slot empty: both have an all-zero target.
    * Everything is float32; the random generator is passed in, so a seed fixes the items.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from casdri.folders import (SAMPLE_RATE_HZ, SOUNDSCAPE_CHANNELS, check_header, read_audio,
                            scan_targets)
from casdri.labels import LabelSet
from casdri.layout import split_folders

__all__ = ["Clip", "list_clips", "read_crop", "track_targets", "envelope",
           "label_vector", "CropSampler", "ENVELOPE_HOP"]

#: samples per envelope frame (0.1 s at 32 kHz)
ENVELOPE_HOP = 3200


@dataclass(frozen=True)
class Clip:
    """One soundscape of a split: its file, its oracle labels and target files (index order)."""

    name: str
    path: Path
    n_samples: int
    labels: tuple[str, ...]
    targets: tuple[Path, ...]


def list_clips(split_dir: Union[str, Path], label_set: LabelSet) -> list[Clip]:
    """The soundscapes of ``split_dir`` with their oracle targets, sorted by name.

    Names are matched by `casdri.folders.scan_targets` (the one DCASE folder reader); the
    soundscape headers are checked (4 channels, 32 kHz) before any training.

    Raises:
        FolderLayoutError: no ``soundscape/`` folder or no wav in it, an oracle file that
            names no soundscape.
        AudioFileError: a soundscape that is not 4-channel 32 kHz.
    """
    sdir, odir = split_folders(split_dir)
    clips = []
    for f in scan_targets(sdir, odir if odir.is_dir() else None, label_set):
        n = check_header(f.mixture_path, sample_rate_hz=SAMPLE_RATE_HZ,
                         n_channels=SOUNDSCAPE_CHANNELS)
        clips.append(Clip(f.name, f.mixture_path, n, tuple(f.ref_labels),
                          tuple(t.path for t in f.refs)))
    return clips


def read_crop(clip: Clip, start: int = 0, stop: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(mixture (4, L), targets (n_targets, L))`` float32 for samples ``start:stop``
    (`casdri.folders.read_audio`)."""
    stop = clip.n_samples if stop is None else stop
    mix = read_audio(clip.path, start=start, stop=stop, check_finite=False)
    tgt = np.zeros((len(clip.targets), stop - start), np.float32)
    for i, p in enumerate(clip.targets):
        tgt[i] = read_audio(p, start=start, stop=stop, check_finite=False)[0]
    return mix, tgt


def track_targets(labels: Sequence[str], label_set: LabelSet, n_tracks: int) -> np.ndarray:
    """``(n_tracks,)`` int64: sorted class indices, then silence (``C``)."""
    idx = sorted(label_set.index(lab) for lab in labels)
    if len(idx) > n_tracks:
        raise ValueError(f"{len(idx)} labels {list(labels)} exceed n_tracks={n_tracks}")
    return np.array(idx + [label_set.n_classes] * (n_tracks - len(idx)), np.int64)


def envelope(targets: np.ndarray, hop: int = ENVELOPE_HOP) -> np.ndarray:
    """``(n_targets, T)`` → ``(n_targets, ceil(T / hop))`` float32 frame energies."""
    n, t = targets.shape
    frames = -(-t // hop)
    pad = np.zeros((n, frames * hop), np.float32)
    pad[:, :t] = targets
    return (pad.reshape(n, frames, hop) ** 2).sum(-1)


def label_vector(slots: Sequence[int], n_classes: int, n_slots: int) -> np.ndarray:
    """Stacked one-hots ``(n_slots * C,)`` float32; a negative slot is empty (zeros)."""
    lv = np.zeros(n_slots * n_classes, np.float32)
    for i, k in enumerate(slots):
        if k >= 0:
            lv[i * n_classes + k] = 1.0
    return lv


class CropSampler:
    """Random separator items from a list of clips.

    Args:
        clips: training clips (`list_clips`).
        envelopes: per clip, ``(n_targets, frames)`` energies (`envelope`).
        label_set: the classes; C = ``label_set.n_classes``.
        n_slots: slots of the separator (3).
        crop_samples: crop length.
        rng: numpy generator.
        absent_classes: classes that may be added as absent queries (default: every class
            with a target in ``clips``).
        p_absent, p_drop: probability of adding an absent class to a free slot, of dropping
            a uniquely-labelled source from the query.
    """

    def __init__(self, clips: Sequence[Clip], envelopes: Sequence[np.ndarray],
                 label_set: LabelSet, n_slots: int, crop_samples: int,
                 rng: np.random.Generator, absent_classes: Sequence[int] | None = None,
                 p_absent: float = 0.4, p_drop: float = 0.2):
        self.clips, self.envelopes = list(clips), list(envelopes)
        self.label_set, self.n_slots, self.crop = label_set, n_slots, crop_samples
        self.rng, self.p_absent, self.p_drop = rng, p_absent, p_drop
        if absent_classes is None:
            absent_classes = sorted({label_set.index(lab) for c in clips for lab in c.labels})
        self.absent_classes = np.asarray(absent_classes or range(label_set.n_classes))
        self.perms = np.array(list(itertools.permutations(range(n_slots))))

    def _start(self, i: int) -> int:
        clip, env = self.clips[i], self.envelopes[i]
        span = clip.n_samples - self.crop
        if span <= 0:
            return 0
        if env.shape[0] == 0 or env.sum() <= 0:
            return int(self.rng.integers(0, span + 1))
        j = self.rng.integers(env.shape[0])
        w = env[j] if env[j].sum() > 0 else env.sum(0)
        frame = self.rng.choice(len(w), p=w / w.sum())
        centre = (frame + self.rng.random()) * ENVELOPE_HOP
        start = centre - self.rng.random() * self.crop
        return int(np.clip(start, 0, span))

    def item(self, i: int):
        """One item: mixture ``(4, L)``, label vector, targets ``(n_slots, L)``, slot labels
        ``(n_slots,)`` (class index; ``-1 - slot`` for an empty slot)."""
        clip = self.clips[i]
        start = self._start(i)
        stop = min(start + self.crop, clip.n_samples)
        mix, tgt = read_crop(clip, start, stop)
        cls = [self.label_set.index(lab) for lab in clip.labels]
        keep = list(range(len(cls)))
        unique = [j for j in keep if cls.count(cls[j]) == 1]
        if len(keep) > 1 and unique and self.rng.random() < self.p_drop:
            keep.remove(int(self.rng.choice(unique)))
        keep = keep[: self.n_slots]
        rows = [(cls[j], tgt[j]) for j in keep]
        if len(rows) < self.n_slots and self.rng.random() < self.p_absent:
            absent = np.setdiff1d(self.absent_classes, cls)
            if absent.size:
                rows.append((int(self.rng.choice(absent)), np.zeros_like(mix[0])))
        rows.sort(key=lambda r: r[0])
        slots = [r[0] for r in rows] + [-1] * (self.n_slots - len(rows))
        targets = np.zeros((self.n_slots, mix.shape[1]), np.float32)
        for s, (_, wav) in enumerate(rows):
            targets[s] = wav
        if mix.shape[1] < self.crop:
            pad = self.crop - mix.shape[1]
            mix, targets = np.pad(mix, ((0, 0), (0, pad))), np.pad(targets, ((0, 0), (0, pad)))
        group = np.array([k if k >= 0 else -1 - s for s, k in enumerate(slots)])
        return mix, label_vector(slots, self.label_set.n_classes, self.n_slots), targets, group

    def batch(self, batch_size: int, with_silent: bool = False):
        """Stacked items plus ``valid (B, n_slots!)``: the slot permutations that only swap
        slots of the same class (the assignments the loss may choose from); with
        ``with_silent`` also ``silent (B, n_slots)`` bool, the empty slots."""
        idx = self.rng.integers(len(self.clips), size=batch_size)
        items = [self.item(int(i)) for i in idx]
        mix, lv, tgt, group = (np.stack(x) for x in zip(*items))
        valid = (group[:, self.perms] == group[:, None, :]).all(-1)
        return (mix, lv, tgt, valid, group < 0) if with_silent else (mix, lv, tgt, valid)
