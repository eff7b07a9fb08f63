"""Render a soundscape recipe to audio: FOA mixture, per-event images and oracle targets.

Conventions:
    * Every array is float64 at the recipe's sample rate; multichannel arrays are
      ``(4, n_samples)`` in the order W, Y, Z, X (ACN, SN3D).
    * **Oracle target** (the reference of DCASE 2026 Task 4): the event convolved with
      channel 0 (W) of its RIR cut to ``[peak − a, peak + b]`` around the largest absolute
      sample, both ends included, ``a``/``b`` = ``oracle_window_ms`` converted with
      ``int(ms · fs / 1000)`` (official: 6 and 50 ms → 192 and 1600 samples at 32 kHz:
      direct path plus early reflections), with the same gain as the event's image, zero
      outside the soundscape (facts from nttcslab/SpAudSyn ``src/room.py`` and
      nttcslab/dcase2026_task4_baseline ``direct_range_ms: [6, 50]``, ``dry_channel: 0``).
      With ``oracle_window_ms = None`` (v1) the RIR is the direct path only (image order 0).
    * **Levels**: ``snr_rule = 'official'`` scales each event so that the mean power over the
      4 channels of its whole convolved image (clip length + RIR length − 1 samples, before
      it is placed and cut at the soundscape's end) is ``snr_db`` above the mean power over
      the 4 channels of the background (nttcslab/SpAudSyn ``spatial_audio_synthesizer.py``:
      event and background both set against ``ref_db``); ``'w_active'`` (v1) uses W power
      over the event's active span against the background's W power.
    * The mixture is the sum, in a fixed order, of the background and the event images, all
      after one common gain (the peak limit), so ``mixture == noise + Σ images`` exactly in
      float64, and ``mixture[0] − Σ oracles`` is reverberation, interference and background.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from casdri.errors import AudioFileError

from .pool import read_clip
from .rooms import diffuse_foa_noise, position_from_direction, simulate_foa_rirs
from .scene import SoundscapeSpec

__all__ = ["RenderedSoundscape", "oracle_rir", "render_soundscape"]

_SILENT_POWER = 1e-12  # -120 dBFS: an event this quiet has no level to scale


@dataclass(frozen=True)
class RenderedSoundscape:
    """Audio of one soundscape (module conventions).

    Attributes:
        mixture: ``(4, n_samples) float64``, W Y Z X.
        images: one ``(4, n_samples)`` reverberant image per event, in recipe order.
        noise: ``(4, n_samples)`` diffuse background.
        oracles: one ``(n_samples,)`` W oracle target per target event, in oracle order.
        gain: the common peak-limit gain applied to everything (≤ 1).
        levels_dbfs: W-channel RMS (dBFS) of each event over its active span, then of the
            background over the whole soundscape, after the gain.
    """

    mixture: np.ndarray
    images: tuple[np.ndarray, ...]
    noise: np.ndarray
    oracles: tuple[np.ndarray, ...]
    gain: float
    levels_dbfs: tuple[float, ...]


def _place(y: np.ndarray, onset: int, n_samples: int) -> np.ndarray:
    """Put ``y`` (``(..., n)``) at ``onset`` in a zero array of length ``n_samples``."""
    out = np.zeros(y.shape[:-1] + (n_samples,))
    n = min(n_samples - onset, y.shape[-1])
    out[..., onset:onset + n] = y[..., :n]
    return out


def oracle_rir(h: np.ndarray, window_ms: tuple[float, float], fs: int) -> np.ndarray:
    """``h`` ``(n_taps,)`` zeroed outside ``[peak − before, peak + after]`` samples (module
    conventions; peak = first largest absolute sample, both ends included)."""
    peak = int(np.argmax(np.abs(h)))
    lo = max(0, peak - int(window_ms[0] * fs / 1000))
    hi = min(h.shape[0], peak + int(window_ms[1] * fs / 1000) + 1)
    out = np.zeros_like(h)
    out[lo:hi] = h[lo:hi]
    return out


def _dbfs(power: float) -> float:
    return 10.0 * math.log10(power) if power > 0 else -math.inf


def render_soundscape(spec: SoundscapeSpec, pool_root: Path) -> RenderedSoundscape:
    """Render ``spec`` with clips read from ``pool_root`` (deterministic).

    Args:
        spec: the recipe (`cache_builder.soundscapes.scene.sample_soundscape`).
        pool_root: the pool folder the recipe's clip paths are relative to.

    Returns:
        The mixture, its components and the oracle targets.

    Raises:
        AudioFileError: an event plays a silent stretch of its clip (no level to set).
    """
    n, fs = spec.n_samples, spec.sample_rate_hz
    rng = np.random.default_rng(spec.render_seed)
    positions = np.array([position_from_direction(spec.room.mic_m, e.azimuth_deg,
                                                  e.elevation_deg, e.distance_m)
                          for e in spec.events]).reshape(-1, 3)
    rirs = simulate_foa_rirs(spec.room, positions, fs, rng, spec.ism_order, max_taps=n,
                             capsule_radius_m=spec.capsule_radius_m) if spec.events else []
    official = spec.snr_rule == "official"
    loop = read_clip(pool_root, spec.noise)
    mono = loop[(spec.noise_offset + np.arange(n)) % loop.shape[0]]
    noise = diffuse_foa_noise(mono, rng)
    noise *= 10.0 ** (spec.noise_level_dbfs / 20.0) / math.sqrt(
        np.mean(noise ** 2) if official else np.mean(noise[0] ** 2))
    noise_power = float(np.mean(noise ** 2) if official else np.mean(noise[0] ** 2))
    images, directs = [], []
    for event, rir in zip(spec.events, rirs):
        x = read_clip(pool_root, event.clip)[event.source_offset:
                                             event.source_offset + event.n_samples]
        wet = signal.oaconvolve(x[None, :], rir.full, axes=1)
        image = _place(wet, event.onset, n)
        power = float(np.mean(wet ** 2)) if official else \
            float(np.mean(image[0, event.onset:event.onset + event.n_samples] ** 2))
        if power < _SILENT_POWER:
            raise AudioFileError(
                f"{pool_root / event.clip.path}: samples {event.source_offset}.."
                f"{event.source_offset + event.n_samples} are silent; trim the clip's silence")
        g = math.sqrt(noise_power * 10.0 ** (event.snr_db / 10.0) / power)
        images.append(g * image)
        if event.role == "target":
            h = rir.direct[0] if spec.oracle_window_ms is None else \
                oracle_rir(rir.full[0], spec.oracle_window_ms, fs)
            directs.append(g * _place(signal.oaconvolve(x, h), event.onset, n))
    total = noise + sum(images) if images else noise
    peak = float(np.max(np.abs(total)))
    gain = min(1.0, spec.peak_limit / peak) if peak > 0 else 1.0
    noise = noise * gain
    images = [im * gain for im in images]
    oracles = tuple(d * gain for d in directs)
    mixture = noise.copy()
    for im in images:
        mixture += im
    levels = [_dbfs(float(np.mean(im[0, e.onset:e.onset + e.n_samples] ** 2)))
              for e, im in zip(spec.events, images)]
    levels.append(_dbfs(float(np.mean(noise[0] ** 2))))
    return RenderedSoundscape(mixture, tuple(images), noise, oracles, gain, tuple(levels))
