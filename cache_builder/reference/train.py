"""Train the reference system (two taggers, a frame-level SED model, two separators and a
SED-guided refinement stage run for two iterations) within a wall-clock budget.

Conventions:
    * One command trains all six models on a DCASE folder made by
      `cache_builder.soundscapes.generate_soundscapes`::

          python -m cache_builder.reference.train --data data/gen --out DIR [--minutes 30]

      It reads ``DATA/train``, writes ``DIR/weights/{tagger_1ch,tagger_4ch,sed,sep_small,
      sep_large,refine}.pt`` (plain ``state_dict``, loadable with ``weights_only=True``),
      ``DIR/system.yaml`` and ``DIR/train_log.json``; with ``--evaluate`` it then scores
      ``DATA/dev`` (not counted in the budget) and writes ``DIR/dev_metrics.json``.
    * **Budget.** ``minutes`` covers everything (reading, features, the six trainings). The
      feature pass reads each training soundscape once; the time left is split among the
      models by `BUDGET_SHARES`. Each model trains until its deadline with a learning rate
      that warms up then follows a cosine over the elapsed **fraction of its time**, so a
      slower machine trains fewer steps but still ends the schedule. Results therefore depend
      on machine speed; the seed fixes data order, initialisation and augmentation.
    * Taggers train on precomputed features (log-mel of W, plus intensity vectors for the
      4-channel tagger) with permutation-invariant cross-entropy; the mono tagger also sees
      single oracle targets (it re-tags separated stems). Separators train on 3 s crops with
      the official class-aware −SNR loss (`class_aware_snr_loss`, the default, ``--loss
      official``: −SNR per same-class pair, empty slots 0, best permutation) or v1's
      thresholded −SNR plus a compressed-magnitude spectral term (`separation_loss`,
      ``--loss v1``), which the direct-path oracle targets of the v1 generator needed.
    * The SED model trains on the 4-channel tagger's features against frame activity
      (`sed_targets`: a class is active in a 0.1 s frame where one of its oracle targets has
      energy within ``SED_ACTIVE_DB`` of that target's loudest frame), binary cross-entropy.
    * The refinement stage trains last, with the official loss, on the trained separators'
      stems of training crops (either separator at random) and, half of the time, on its own
      output of those (its second iteration), guided by the trained SED model's
      float16-rounded frames, as the cache builder feeds it.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import yaml

from casdri._io import atomic_write_text
from casdri.labels import LabelSet, get_label_set
from casdri.metric import capi_sdri, label_accuracies, label_counts
from casdri.sed import as_cached

from ..soundscapes.stats import split_difficulty
from ..system import load_system
from . import models
from .data import Clip, CropSampler, envelope, list_clips, read_crop, track_targets
from .models import n_parameters

__all__ = ["train_reference_system", "evaluate_reference_system", "class_aware_snr_loss",
           "separation_loss", "sed_targets", "MODEL_SPECS", "BUDGET_SHARES",
           "SEPARATION_LOSSES", "SED_ACTIVE_DB", "REFINE_ITERATIONS", "main"]

#: name → (class, constructor args, checkpoint file); the shipped system.yaml says the same
MODEL_SPECS = {
    "tagger_1ch": ("Tagger1ch", {"n_classes": 18, "n_tracks": 3, "dim": 112}),
    "tagger_4ch": ("Tagger4ch", {"n_classes": 18, "n_tracks": 3, "dim": 112}),
    "sed": ("SedDetector", {"n_classes": 18, "dim": 96, "n_layers": 3}),
    "sep_small": ("MaskSeparator", {"n_classes": 18, "n_slots": 3, "dim": 96, "hidden": 192,
                                    "n_shared": 3, "n_cond": 3}),
    "sep_large": ("BeamSeparator", {"n_classes": 18, "n_slots": 3, "dim": 128, "hidden": 256,
                                    "n_shared": 4, "n_cond": 4}),
    "refine": ("RefineStage", {"n_classes": 18, "n_slots": 3, "dim": 64, "hidden": 128,
                               "n_blocks": 4}),
}
#: share of the time left after the feature pass (training order)
BUDGET_SHARES = {"tagger_1ch": 0.10, "tagger_4ch": 0.13, "sed": 0.07, "sep_small": 0.25,
                 "sep_large": 0.33, "refine": 0.12}
#: a target is active in a frame within this many dB of its loudest frame (`sed_targets`)
SED_ACTIVE_DB = 30.0
#: iterations of the refinement stage in the system YAML (each a cache stage)
REFINE_ITERATIONS = 2
_MODULE = "cache_builder.reference.models"
#: ``--loss`` choices of the separators
SEPARATION_LOSSES = ("official", "v1")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_model(name: str):
    """A fresh model of `MODEL_SPECS` ``name``."""
    cls, args = MODEL_SPECS[name]
    return getattr(models, cls)(**args)


def _lr(base: float, frac: float, warmup: float = 0.03) -> float:
    if frac < warmup:
        return base * max(frac / warmup, 0.02)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (frac - warmup) / (1 - warmup))))


class _Clock:
    """Deadline and step limit of one training run."""

    def __init__(self, seconds: float, max_steps: Optional[int]):
        self.t0, self.seconds, self.max_steps, self.step = time.time(), seconds, max_steps, 0

    @property
    def frac(self) -> float:
        f = (time.time() - self.t0) / max(self.seconds, 1e-9)
        if self.max_steps:
            f = max(f, self.step / self.max_steps)
        return f

    def running(self) -> bool:
        return self.frac < 1.0


# ----------------------------------------------------------------------------- features


def _step(model, opt, loss, lr: float, clock: "_Clock", losses: list, unit: str) -> None:
    """One optimiser step on the schedule of `_lr`, gradient norm clipped at 5, logged
    every 50 steps."""
    for g in opt.param_groups:
        g["lr"] = _lr(lr, clock.frac)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    clock.step += 1
    losses.append(loss.item())
    if clock.step % 50 == 0:
        _log(f"  step {clock.step} loss {np.mean(losses[-50:]):.4f}{unit}")


def tagger_bank(clips: list[Clip], label_set: LabelSet, n_tracks: int, t1, t4,
                batch_size: int = 16) -> dict:
    """Read every clip once: tagger features (float16), track targets, target envelopes.

    Returns:
        ``{"feat4": (N, F4, frames), "feat1": (N, F1, frames), "y": (N, K),
        "single1": (M, F1, frames), "single_y": (M, K), "envelopes": [N × (n_t, frames)]}``.
    """
    feat4, feat1, single, single_y, envs, ys = [], [], [], [], [], []
    shared = (t1.features.n_fft, t1.features.hop) == (t4.features.n_fft, t4.features.hop) \
        and torch.equal(t1.features.mel, t4.features.mel)
    n1 = t1.features.n_out
    for lo in range(0, len(clips), batch_size):
        chunk = clips[lo: lo + batch_size]
        audio = [read_crop(c) for c in chunk]
        t_max = max(c.n_samples for c in chunk)
        mix = torch.zeros(len(chunk), 4, t_max)
        for i, (m, _) in enumerate(audio):
            mix[i, :, : m.shape[1]] = torch.from_numpy(m)
        with torch.no_grad():
            f4 = t4.features(mix)
            feat4.append(f4.half())
            feat1.append((f4[:, :n1] if shared else t1.features(mix[:, :1])).half())
            tg = [torch.from_numpy(t) for _, t in audio]
            rows = [(t, c, j) for t, c in zip(tg, chunk) for j in range(t.shape[0])]
            if rows:
                x = torch.zeros(len(rows), 1, t_max)
                for i, (t, _, j) in enumerate(rows):
                    x[i, 0, : t.shape[1]] = t[j]
                single.append(t1.features(x).half())
                single_y += [track_targets([c.labels[j]], label_set, n_tracks) for _, c, j in rows]
        for (_, t), c in zip(audio, chunk):
            envs.append(envelope(t))
            ys.append(track_targets(c.labels, label_set, n_tracks))
        if lo // batch_size % 20 == 0:
            _log(f"features {lo + len(chunk)}/{len(clips)}")
    frames = max(f.shape[-1] for f in feat4)
    pad = lambda fs: torch.cat([torch.nn.functional.pad(f, (0, frames - f.shape[-1]))  # noqa
                                for f in fs]) if fs else torch.zeros(0, n1, frames).half()
    return {"feat4": pad(feat4), "feat1": pad(feat1), "y": torch.from_numpy(np.stack(ys)),
            "single1": pad(single),
            "single_y": torch.from_numpy(np.stack(single_y)) if single_y
            else torch.zeros(0, n_tracks, dtype=torch.long),
            "envelopes": envs}


def _augment(x, n_log_rows: int, gen):
    """Random gain (±6 dB on the log-mel rows), circular time shift, one frequency mask."""
    b, f, n = x.shape
    gain = (torch.rand(b, 1, 1, generator=gen) * 12 - 6) * (math.log(10) / 10)
    x = x.clone()
    x[:, :n_log_rows] += gain
    shift = int(torch.randint(n, (1,), generator=gen))
    x = torch.roll(x, shift, dims=-1)
    width = int(torch.randint(0, 9, (1,), generator=gen))
    lo = int(torch.randint(0, max(1, n_log_rows - width), (1,), generator=gen))
    x[:, lo: lo + width] = x[:, :n_log_rows].mean(dim=(1, 2), keepdim=True)
    return x


def train_tagger(model, feats, y, seconds: float, extra=None, p_extra: float = 0.25,
                 batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
                 max_steps: Optional[int] = None) -> dict:
    """Train a tagger on precomputed features until ``seconds`` pass (or ``max_steps``).

    Args:
        feats, y: ``(N, F, frames)`` float16 features and ``(N, K)`` track targets.
        extra: optional ``(features, targets)`` mixed in with probability ``p_extra``.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    clock, losses = _Clock(seconds, max_steps), []
    n_log = model.features.mel.shape[0]
    model.train()
    while clock.running():
        idx = torch.randint(len(feats), (batch_size,), generator=gen)
        x, t = feats[idx].float(), y[idx]
        if extra is not None and len(extra[0]):
            use = torch.rand(batch_size, generator=gen) < p_extra
            if use.any():
                j = torch.randint(len(extra[0]), (int(use.sum()),), generator=gen)
                x[use], t[use] = extra[0][j].float(), extra[1][j]
        _step(model, opt, model.loss(_augment(x, n_log, gen), t), lr, clock, losses, "")
    model.eval()
    return {"steps": clock.step, "seconds": time.time() - clock.t0,
            "final_loss": float(np.mean(losses[-50:])) if losses else None}


def sed_targets(envelopes, labels, label_set: LabelSet, n_frames: int,
                active_db: float = SED_ACTIVE_DB) -> np.ndarray:
    """Frame activity of one soundscape's classes, the SED model's training target.

    Args:
        envelopes: ``(n_targets, frames)`` frame energies of the oracle targets
            (`cache_builder.reference.data.envelope`, 0.1 s frames).
        labels: the targets' class names, in the same order.
        n_frames: frames of the output (cropped or zero-padded).
        active_db: a target is active where its frame energy is within this many dB of its
            loudest frame (and non-zero).

    Returns:
        ``(n_frames, C)`` uint8 in {0, 1}.
    """
    out = np.zeros((n_frames, label_set.n_classes), np.uint8)
    for env, lab in zip(envelopes, labels):
        peak = float(env.max()) if env.size else 0.0
        if peak <= 0:
            continue
        on = (env > 0) & (env >= peak * 10 ** (-active_db / 10))
        n = min(n_frames, len(on))
        out[:n, label_set.index(lab)] |= on[:n].astype(np.uint8)
    return out


def train_sed(model, feats, targets, seconds: float, batch_size: int = 32, lr: float = 2e-3,
              seed: int = 0, max_steps: Optional[int] = None) -> dict:
    """Train the SED model on precomputed features ``(N, F, frames)`` against
    ``(N, n_frames, C)`` frame activity (`sed_targets`) until ``seconds`` pass (or
    ``max_steps``); augmentation: gain, one frequency mask and a circular shift by whole SED
    frames (features and targets together)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    clock, losses = _Clock(seconds, max_steps), []
    n_log = model.features.mel.shape[0]
    pool = model.pool
    model.train()
    while clock.running():
        idx = torch.randint(len(feats), (batch_size,), generator=gen)
        x, t = feats[idx].float(), targets[idx]
        shift = int(torch.randint(t.shape[1], (1,), generator=gen))
        x = torch.roll(x, shift * pool, dims=-1)
        t = torch.roll(t, shift, dims=1)
        gain = (torch.rand(batch_size, 1, 1, generator=gen) * 12 - 6) * (math.log(10) / 10)
        x[:, :n_log] += gain
        width = int(torch.randint(0, 9, (1,), generator=gen))
        lo = int(torch.randint(0, max(1, n_log - width), (1,), generator=gen))
        x[:, lo: lo + width] = x[:, :n_log].mean(dim=(1, 2), keepdim=True)
        _step(model, opt, model.loss(x, t), lr, clock, losses, "")
    model.eval()
    return {"steps": clock.step, "seconds": time.time() - clock.t0,
            "final_loss": float(np.mean(losses[-50:])) if losses else None}


def class_aware_snr_loss(est, ref, valid, silent):
    """The official class-aware permutation-invariant −SNR loss of DCASE 2026 Task 4.

    A pair (stem e, reference r) of the same class costs ``−10·log10((‖r‖² + ε) /
    (‖r − e‖² + ε))`` with ``ε = torch.finfo(dtype).eps`` (torchmetrics
    ``signal_noise_ratio``, no zero-mean); an empty slot costs 0 whatever its stem and is
    not permuted; the cost of an assignment is the mean over the slots, the loss the
    minimum over the allowed assignments, averaged over the batch. Facts from
    nttcslab/dcase2026_task4_baseline ``src/training/loss/class_aware_pit.py``; own code.

    Args:
        est, ref: ``(B, S, L)`` stems and references (float).
        valid: ``(B, S!)`` bool, the slot permutations allowed (same-class swaps; itertools
            order).
        silent: ``(B, S)`` bool, the empty slots.

    Returns:
        Scalar tensor, dB.
    """
    b, s, _ = est.shape
    eps = torch.finfo(est.dtype).eps
    r2 = ref.pow(2).sum(-1).unsqueeze(1)                                  # (B, 1, S_ref)
    err = (est.unsqueeze(2) - ref.unsqueeze(1)).pow(2).sum(-1)           # (B, S_est, S_ref)
    pair = -10 * torch.log10((r2 + eps) / (err + eps))
    pair = pair.masked_fill(silent.unsqueeze(1), 0.0)
    perms = torch.tensor(list(itertools.permutations(range(s))))
    cost = pair[:, perms, torch.arange(s).expand_as(perms)].mean(-1)     # (B, S!)
    cost = cost.masked_fill(~valid, float("inf"))
    return cost.min(dim=1).values.mean()


def separation_loss(est, ref, mix0, valid, tau: float = 1e-3, active_db: float = -30.0,
                    quiet_weight: float = 0.1, spectral_weight: float = 100.0,
                    n_fft: int = 512, hop: int = 256):
    """Negative SNR plus a compressed-magnitude spectral distance, best same-class slot
    assignment.

    With ``m = ‖mix0‖²`` and ``ε = 10^(active_db/10) · m``, a pair (stem e, reference r) costs

    * ``10·log10((‖r − e‖² + τ‖r‖²) / ‖r‖²)`` when ``‖r‖² ≥ ε`` (−SNR with a
      ``−10·log10 τ`` = 30 dB ceiling);
    * ``quiet_weight · 10·log10((‖r − e‖² + ε) / ε)`` otherwise (a reference that is silent
      in the crop, an absent class, an empty slot): ≥ 0, 0 for a silent stem, and weighted
      down so that muting everything is never the cheap way out;
    * plus ``spectral_weight · mean((|E|^0.3 − |R|^0.3)²)`` over the STFT bins of stem and
      reference, both divided by the RMS of ``mix0``. The SNR alone has a trap here: the
      oracle target is the direct path only, so the mixture's SNR against it is about
      −10 dB and an all-zero stem (SNR 0 dB) is a strong local optimum that a mask net
      falls into within a hundred steps; the spectral term keeps the stem's magnitude on
      the target's.

    Args:
        est, ref: ``(B, S, L)`` stems and references.
        mix0: ``(B, L)`` mixture channel 0.
        valid: ``(B, S!)`` bool, the slot permutations allowed (same-class swaps).
        tau: SNR ceiling as an energy ratio.
        active_db: reference energy relative to the mixture below which it counts as quiet.
        quiet_weight: weight of the quiet cost.
        spectral_weight: weight of the compressed-magnitude term (0 turns it off).
        n_fft, hop: STFT of the spectral term (Hann window).

    Returns:
        Scalar, per slot averaged over slots and the batch.
    """
    b, s, n = est.shape
    eps = 10 ** (active_db / 10) * mix0.pow(2).sum(-1)[:, None, None] + 1e-10
    r2 = ref.pow(2).sum(-1).unsqueeze(1)                                  # (B, 1, S_ref)
    err = (est.unsqueeze(2) - ref.unsqueeze(1)).pow(2).sum(-1)           # (B, S_est, S_ref)
    active = r2 >= eps
    loud = 10 * torch.log10((err + tau * r2 + 1e-10) / (r2 + 1e-10))
    quiet = quiet_weight * 10 * torch.log10((err + eps) / eps)
    pair = torch.where(active, loud, quiet)
    if spectral_weight:
        scale = mix0.pow(2).mean(-1).add(1e-10).sqrt()[:, None, None]
        window = torch.hann_window(n_fft, device=est.device)

        def mag(x):
            spec = torch.stft((x / scale).reshape(b * s, n), n_fft, hop, window=window,
                              return_complex=True)
            return spec.abs().clamp_min(1e-8).pow(0.3).reshape(b, s, -1)
        e, r = mag(est), mag(ref)
        pair = pair + spectral_weight * (e.unsqueeze(2) - r.unsqueeze(1)).pow(2).mean(-1)
    perms = torch.tensor(list(itertools.permutations(range(s))))
    cost = pair[:, torch.arange(s).expand_as(perms), perms].sum(-1)      # (B, S!)
    cost = cost.masked_fill(~valid, float("inf"))
    return cost.min(dim=1).values.mean() / s


class _Prefetch:
    """Make the next batch in a thread while the model trains on the current one (reading
    audio releases the GIL)."""

    def __init__(self, make):
        self.make, self.queue, self.stop = make, queue.Queue(maxsize=2), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                item = self.make()
            except Exception as e:  # noqa: BLE001 - re-raised in the training thread
                item = e
            while not self.stop.is_set():
                try:
                    self.queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, Exception):
                return

    def next(self):
        item = self.queue.get()
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        self.stop.set()
        self.thread.join()


#: a slot whose reference holds less than this (dB) of the crop's mixture channel-0 energy is
#: silent for the official loss (an absent-class query, or an event outside the crop)
SILENT_REFERENCE_DB = -30.0


def silent_slots(tgt, mix, empty, level_db: float = SILENT_REFERENCE_DB):
    """The slots the official loss scores 0: empty slots, and slots whose reference is silent
    in the crop (energy below ``level_db`` of the mixture's channel 0: an absent class asked
    for, or an event outside the crop).

    The official training queries only the classes present in a whole 10 s soundscape, so no
    reference is silent there; with 3 s crops and absent-class queries, the loss's
    ``−10·log10(ε / (‖e‖² + ε))`` on a silent reference (tens of dB for any sound) pushes
    every stem to zero within a hundred steps, a state the sigmoid mask does not leave.

    Args:
        tgt: ``(B, S, L)`` references; mix: ``(B, 4, L)`` crops; empty: ``(B, S)`` bool.

    Returns:
        ``(B, S)`` bool.
    """
    floor = 10 ** (level_db / 10) * mix[:, 0].pow(2).sum(-1, keepdim=True)
    return empty | (tgt.pow(2).sum(-1) <= floor)


def _train_on_crops(model, sampler: CropSampler, seconds: float, batch_size: int, lr: float,
                    max_steps: Optional[int], batch_loss) -> dict:
    """The crop training loop of the separators and the stage: batches made in a thread,
    ``batch_loss(mix, lv, tgt, valid, silent)`` (dB) stepped on the `_lr` schedule until
    ``seconds`` pass (or ``max_steps``)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    clock, losses = _Clock(seconds, max_steps), []
    model.train()
    batches = _Prefetch(lambda: sampler.batch(batch_size, with_silent=True))
    try:
        while clock.running():
            batch = (torch.from_numpy(a) for a in batches.next())
            _step(model, opt, batch_loss(*batch), lr, clock, losses, " dB")
    finally:
        batches.close()
    model.eval()
    return {"steps": clock.step, "seconds": time.time() - clock.t0,
            "final_loss_db": float(np.mean(losses[-50:])) if losses else None}


def train_separator(model, sampler: CropSampler, seconds: float, batch_size: int = 8,
                    lr: float = 1e-3, max_steps: Optional[int] = None,
                    loss: str = "official") -> dict:
    """Train a separator on sampler crops until ``seconds`` pass (or ``max_steps``) with the
    ``loss`` of `SEPARATION_LOSSES` (module conventions)."""
    def batch_loss(mix, lv, tgt, valid, silent):
        est = model.separate(mix, lv)
        if loss == "official":
            return class_aware_snr_loss(est, tgt, valid, silent_slots(tgt, mix, silent))
        return separation_loss(est, tgt, mix[:, 0], valid)
    return _train_on_crops(model, sampler, seconds, batch_size, lr, max_steps, batch_loss)


def train_refine(model, separators: list, sed_model, sampler: CropSampler, seconds: float,
                 batch_size: int = 8, lr: float = 1e-3, p_second: float = 0.5, seed: int = 0,
                 max_steps: Optional[int] = None) -> dict:
    """Train the refinement stage (module conventions) with the official loss on the stems of
    the trained ``separators`` (one at random per batch), half of the time (``p_second``) on
    its own output of those, guided by ``sed_model``'s float16-rounded frames."""
    gen = np.random.default_rng(seed)

    def batch_loss(mix, lv, tgt, valid, silent):
        with torch.no_grad():
            sep = separators[int(gen.integers(len(separators)))]
            stems = sep.separate(mix, lv)
            sed = torch.from_numpy(as_cached(sed_model({"waveform": mix})["probabilities"])
                                   .astype(np.float32))
            if gen.random() < p_second:
                stems = model.refine(mix, lv, stems, sed)
        est = model.refine(mix, lv, stems, sed)
        return class_aware_snr_loss(est, tgt, valid, silent_slots(tgt, mix, silent))
    return _train_on_crops(model, sampler, seconds, batch_size, lr, max_steps, batch_loss)


# ----------------------------------------------------------------------------- system


def system_yaml(label_set: LabelSet, n_tracks: int = 3) -> str:
    """The system YAML text naming the six models (checkpoints under ``weights/``): the SED
    model as ``sed`` (0.1 s frames) and the refinement stage as ``refine``, SED-guided, run
    `REFINE_ITERATIONS` times (cache stages ``refine#1``, ``refine#2``)."""
    def block(key, **head):
        cls, args = MODEL_SPECS[key]
        return {**head, "module": _MODULE, "class": cls, "args": dict(args),
                "checkpoint": f"weights/{key}.pt"}
    refine = block("refine", name="refine")
    refine.update(iterations=REFINE_ITERATIONS, sed_guided=True)
    sed = block("sed", name="sed")
    sed["frame_hop_s"] = models.SED_HOP / 32000
    data = {"label_set": label_set.name, "sample_rate_hz": 32000, "n_tracks": n_tracks,
            "taggers": {"1ch": block("tagger_1ch"), "4ch": block("tagger_4ch")},
            "separators": {"small": block("sep_small"), "large": block("sep_large")},
            "retagger": "1ch", "stages": [refine], "sed": sed, "allow_pickle": False}
    head = ("# casdri reference system: written by cache_builder.reference.train\n"
            "# (checkpoint paths are relative to this file's folder)\n")
    return head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def train_reference_system(data_dir: Union[str, Path], out_dir: Union[str, Path],
                           minutes: float = 30.0, seed: int = 0, label_set="dcase2026t4",
                           max_steps: Optional[int] = None, threads: int = 2,
                           crop_seconds: float = 3.0, loss: str = "official",
                           resume: bool = False) -> dict:
    """Train the six reference models on ``data_dir/train`` and save them in ``out_dir``.

    Args:
        data_dir: folder with ``train/soundscape`` and ``train/oracle_target``.
        out_dir: receives ``weights/*.pt``, ``system.yaml`` and ``train_log.json``.
        minutes: wall-clock budget for everything (see module *Conventions*).
        seed: seeds torch and the samplers.
        max_steps: optional step cap per model (tests).
        threads: ``torch.set_num_threads``.
        crop_seconds: separator training crop length.
        loss: separator loss, one of `SEPARATION_LOSSES`.
        resume: reuse the models that ``out_dir/train_log.json`` lists as trained (their
            checkpoints loaded, not retrained: a killed run redoes no finished model); the
            models left share the time left by their `BUDGET_SHARES`. The log is written
            after every model.

    Returns:
        The training log: per model steps, seconds, parameters and final loss.
    """
    if loss not in SEPARATION_LOSSES:
        raise ValueError(f"loss must be one of {SEPARATION_LOSSES}, got {loss!r}")
    t_start = time.time()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(seed)
    label_set = get_label_set(label_set)
    out_dir = Path(out_dir)
    (out_dir / "weights").mkdir(parents=True, exist_ok=True)
    clips = list_clips(Path(data_dir) / "train", label_set)
    _log(f"{len(clips)} training soundscapes; budget {minutes:.1f} min")
    models = {name: build_model(name) for name in MODEL_SPECS}
    done: dict = {}
    log_path = out_dir / "train_log.json"
    if resume and log_path.is_file():
        done = json.loads(log_path.read_text()).get("models", {})
        for name in list(done):
            ckpt = out_dir / "weights" / f"{name}.pt"
            if name not in models or not ckpt.is_file():
                done.pop(name)
                continue
            models[name].load_state_dict(torch.load(ckpt, weights_only=True))
            models[name].eval()
            _log(f"resume: {name} already trained ({done[name].get('steps')} steps), reused")
    bank = tagger_bank(clips, label_set, 3, models["tagger_1ch"], models["tagger_4ch"])
    log = {"n_train": len(clips), "seed": seed, "minutes": minutes, "loss": loss,
           "feature_seconds": time.time() - t_start, "models": dict(done),
           "resumed": sorted(done)}
    _log(f"features done in {log['feature_seconds']:.0f} s")
    left = minutes * 60 - (time.time() - t_start) - 10.0
    rng = np.random.default_rng(seed)
    n_sed = bank["feat4"].shape[-1]
    n_sed = -(-n_sed // models["sed"].pool)
    sed_y = torch.from_numpy(np.stack([sed_targets(e, c.labels, label_set, n_sed)
                                       for e, c in zip(bank["envelopes"], clips)]))
    sampler = CropSampler(clips, bank["envelopes"], label_set, 3, int(crop_seconds * 32000),
                          rng)
    todo_share = sum(BUDGET_SHARES[n] for n in models if n not in done) or 1.0
    for name, model in models.items():
        if name in done:
            continue
        seconds = max(left * BUDGET_SHARES[name] / todo_share, 1.0)
        _log(f"training {name} ({n_parameters(model)} params) for {seconds:.0f} s")
        if name == "tagger_1ch":
            info = train_tagger(model, bank["feat1"], bank["y"], seconds,
                                extra=(bank["single1"], bank["single_y"]), seed=seed,
                                max_steps=max_steps)
        elif name == "tagger_4ch":
            info = train_tagger(model, bank["feat4"], bank["y"], seconds, seed=seed + 1,
                                max_steps=max_steps)
        elif name == "sed":
            info = train_sed(model, bank["feat4"], sed_y, seconds, seed=seed + 2,
                             max_steps=max_steps)
        elif name == "refine":
            info = train_refine(model, [models["sep_small"], models["sep_large"]],
                                models["sed"], sampler, seconds, seed=seed + 3,
                                max_steps=max_steps)
        else:
            info = train_separator(model, sampler, seconds, max_steps=max_steps, loss=loss)
        info["parameters"] = n_parameters(model)
        torch.save(model.state_dict(), out_dir / "weights" / f"{name}.pt")
        log["models"][name] = info
        atomic_write_text(log_path, json.dumps(log, indent=2))
        _log(f"{name}: {info}")
    (out_dir / "system.yaml").write_text(system_yaml(label_set))
    log["total_seconds"] = time.time() - t_start
    atomic_write_text(log_path, json.dumps(log, indent=2))
    _log(f"done in {log['total_seconds'] / 60:.1f} min → {out_dir}")
    return log


# ----------------------------------------------------------------------------- evaluation


def evaluate_reference_system(system_yaml_path: Union[str, Path], split_dir: Union[str, Path],
                              batch_size: int = 4, limit: Optional[int] = None) -> dict:
    """Dev metrics of a system YAML on a generated split folder, beside their floors.

    Taggers: mixture accuracy (multiset of per-track argmax labels, silence dropped, equals
    the reference) and source accuracy ``tp / (tp + fp + fn)``, percent, `casdri.metric`.
    Separators: mean CAPI-SDRi (dB) with the oracle labels as the query (canonical order),
    stems against the oracle targets, mixture channel 0 as the reference; zero-target clips
    are left out (no label on either side); ``stages`` gives the same for each cache stage
    after each separator (``"small>refine#1"``...). SED (when the system has it): frame F1,
    precision and recall at probability 0.5 (percent) against `sed_targets`. ``floors`` are the split's figures that need no
    model (`cache_builder.soundscapes.stats.split_difficulty`): the all-silence tagger's
    mixture accuracy, the all-silent and the least-squares-scaled-mixture CAPI-SDRi floors,
    the ideal-ratio-mask ceiling and the median SNR of the mixture against the targets; a
    figure means something only above its floor.

    Raises:
        FileNotFoundError: the split has no metadata (not made by ``casdri-cache generate``).
    """
    system = load_system(system_yaml_path, device="cpu")
    ls = system.label_set
    clips = list_clips(split_dir, ls)[:limit]
    counts = {name: [] for name in system.taggers}
    stage_names = [n for n, _ in system.spec.stage_runs()]
    sdri = {(name, k): [] for name in system.separators for k in range(1 + len(stage_names))}
    sed_tp = sed_fp = sed_fn = 0
    for lo in range(0, len(clips), batch_size):
        chunk = clips[lo: lo + batch_size]
        audio = [read_crop(c) for c in chunk]
        mix = torch.from_numpy(np.stack([m for m, _ in audio]))
        for name in system.taggers:
            probs = system.tag(name, mix)
            for p, c in zip(probs, chunk):
                est = [ls.classes[k] for k in p.argmax(-1) if k < ls.n_classes]
                counts[name].append(label_counts(est, list(c.labels)))
        sed = None
        if system.sed is not None:
            frames = system.detect(mix)
            sed = torch.from_numpy(frames.astype(np.float32))
            for f, c, (_, ref) in zip(frames, chunk, audio):
                want = sed_targets(envelope(ref), c.labels, ls, f.shape[0]).astype(bool)
                got = f.astype(np.float32) >= 0.5
                sed_tp += int((got & want).sum())
                sed_fp += int((got & ~want).sum())
                sed_fn += int((~got & want).sum())
        queries = [sorted(ls.index(lab) for lab in c.labels) for c in chunk]
        for name in system.separators:
            outs = system.separate(name, mix, queries, sed=sed)
            for k, out in enumerate(outs):
                for s, q, c, (m, ref) in zip(out[:, :, 0].numpy(), queries, chunk, audio):
                    if not q:
                        continue
                    value = capi_sdri([ls.classes[j] for j in q], s[: len(q)], list(c.labels),
                                      ref, m[0])
                    if value is not None:
                        sdri[(name, k)].append(value)
    split = split_difficulty(split_dir, limit)
    out = {"n_soundscapes": len(clips), "taggers": {}, "separators": {},
           "floors": {"silence_tagger_accuracy_mix_pct": split.silence_tagger_pct,
                      "silent_stems_capi_sdri_db": split.silent_floor_db,
                      "scaled_mixture_capi_sdri_db": split.gain_floor_db,
                      "ideal_mask_capi_sdri_db": split.ideal_mask_db,
                      "median_snr_mixture_db": split.median_snr_mix_db}}
    for name, cs in counts.items():
        acc_mix, acc_src = label_accuracies(cs)
        out["taggers"][name] = {"accuracy_mix_pct": acc_mix, "accuracy_src_pct": acc_src}
    for (name, k), vals in sdri.items():
        figures = {"capi_sdri_db": float(np.mean(vals)) if vals else None, "n_scored": len(vals)}
        if k == 0:
            out["separators"][name] = figures
        else:
            out.setdefault("stages", {})[f"{name}>{stage_names[k - 1]}"] = figures
    if system.sed is not None:
        pct = lambda a, b: 100.0 * a / b if b else None  # noqa: E731
        out["sed"] = {"frame_f1_pct": pct(2 * sed_tp, 2 * sed_tp + sed_fp + sed_fn),
                      "frame_precision_pct": pct(sed_tp, sed_tp + sed_fp),
                      "frame_recall_pct": pct(sed_tp, sed_tp + sed_fn)}
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cache_builder.reference.train",
                                description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with train/ (and dev/ for --evaluate)")
    p.add_argument("--out", required=True, help="output folder (weights/, system.yaml)")
    p.add_argument("--minutes", type=float, default=30.0, help="total wall-clock budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loss", choices=SEPARATION_LOSSES, default="official",
                   help="separator loss: official class-aware -SNR (default) or v1")
    p.add_argument("--evaluate", action="store_true", help="score DATA/dev afterwards")
    p.add_argument("--resume", action="store_true",
                   help="reuse the models OUT/train_log.json lists as trained (a killed run "
                        "redoes no finished model)")
    p.add_argument("--evaluate-only", action="store_true", help="skip training")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate the first N dev soundscapes only (default: all)")
    a = p.parse_args(argv)
    if a.limit is not None and a.limit < 1:
        p.error(f"--limit must be >= 1, got {a.limit}")
    if not a.evaluate_only:
        train_reference_system(a.data, a.out, a.minutes, a.seed, threads=a.threads,
                               loss=a.loss, resume=a.resume)
    if a.evaluate or a.evaluate_only:
        torch.set_num_threads(a.threads)
        t0 = time.time()
        metrics = evaluate_reference_system(Path(a.out) / "system.yaml", Path(a.data) / "dev",
                                            limit=a.limit)
        metrics["seconds"] = time.time() - t0
        (Path(a.out) / "dev_metrics.json").write_text(json.dumps(metrics, indent=2))
        print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
