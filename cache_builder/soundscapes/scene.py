"""Random soundscape recipes: what plays where, when and how loud (no audio here).

Conventions:
    * A recipe (`SoundscapeSpec`) is drawn from ``np.random.default_rng(seed)`` in a fixed
      order, so a seed and a pool split determine it completely; rendering it
      (`cache_builder.soundscapes.render_soundscape`) is deterministic too.
    * Targets: 0 with probability ``zero_target_prob`` (0.2), else 1..``max_targets`` (3)
      uniformly; each label uniform over the classes with clips in the split (same-class
      duplicates allowed); a clip is not reused within a soundscape while unused clips of its
      kind remain. Same-label targets are at least ``min_duplicate_separation_deg`` (60°)
      apart in azimuth (circular distance). Interference: 0..``max_interference`` (2)
      uniformly. Background: one clip of the split's ``noise/``, looped from a random offset.
    * An event plays ``min(clip length, soundscape length)`` samples from a uniformly drawn
      clip offset, at a uniformly drawn onset so that it ends inside the soundscape; its
      reverberant tail continues to the end of the soundscape.
    * Levels: ``snr_db`` is the power of the event's reverberant image in channel W over its
      active span ``[onset, onset + n_samples)`` over the mean power of the background's W
      channel; targets draw it from ``target_snr_db`` (5–20 dB), interference from
      ``interference_snr_db`` (0–15 dB). The background's W RMS is ``noise_level_dbfs``
      before the soundscape-wide peak limit (a common gain that keeps every SNR).
    * Geometry: room sides and RT60 uniform in their ranges; the array at least
      ``array_margin_m`` from the walls at height 1.2–1.8 m; a source at uniform azimuth,
      elevation and distance, redrawn until it is ``wall_margin_m`` inside the room.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from casdri.errors import InputError

from .pool import Clip, PoolSplit
from .rooms import RoomSpec, position_from_direction

__all__ = ["SoundscapeConfig", "EventSpec", "SoundscapeSpec", "sample_soundscape"]

_MAX_TRIES = 2000


@dataclass(frozen=True)
class SoundscapeConfig:
    """Distributions of the generator (ranges are ``(low, high)``, drawn uniformly).

    Attributes:
        zero_target_prob: probability of a soundscape without target events.
        max_targets: most target events in one soundscape.
        max_interference: most interference events in one soundscape.
        target_snr_db: target level over the background, dB.
        interference_snr_db: interference level over the background, dB.
        rt60_s: nominal reverberation time, s.
        room_length_m, room_width_m, room_height_m: room sides x, y, z, m.
        distance_m: source distance from the array centre, m.
        elevation_deg: source elevation, degrees.
        min_duplicate_separation_deg: least azimuth gap between same-label targets, degrees.
        array_margin_m: least distance of the array from a wall (horizontally), m.
        wall_margin_m: least distance of a source from any wall, floor or ceiling, m.
        noise_level_dbfs: background W RMS before the peak limit, dBFS.
        peak_limit: largest absolute mixture sample after the common gain.
        ism_order: image-source order simulated exactly (then a diffuse tail).
        oracle_window_ms: ``None`` (default): the oracle target uses the direct path only
            (image order 0). ``(before, after)``: it uses the W RIR cut to ``[peak − before,
            peak + after]`` ms around its largest sample, like the official DCASE 2025
            generator (``spatialize_direct_path_time_ms = [6, 50]``: direct path plus early
            reflections).
    """

    zero_target_prob: float = 0.2
    max_targets: int = 3
    max_interference: int = 2
    target_snr_db: tuple[float, float] = (5.0, 20.0)
    interference_snr_db: tuple[float, float] = (0.0, 15.0)
    rt60_s: tuple[float, float] = (0.2, 0.8)
    room_length_m: tuple[float, float] = (3.0, 7.0)
    room_width_m: tuple[float, float] = (3.0, 6.0)
    room_height_m: tuple[float, float] = (2.5, 3.5)
    distance_m: tuple[float, float] = (0.75, 2.5)
    elevation_deg: tuple[float, float] = (-20.0, 40.0)
    min_duplicate_separation_deg: float = 60.0
    array_margin_m: float = 0.8
    wall_margin_m: float = 0.3
    noise_level_dbfs: tuple[float, float] = (-45.0, -35.0)
    peak_limit: float = 0.95
    ism_order: int = 12
    oracle_window_ms: Optional[tuple[float, float]] = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.zero_target_prob <= 1.0:
            raise InputError(f"zero_target_prob must be in [0, 1], got {self.zero_target_prob}")
        if self.max_targets < 0 or self.max_interference < 0:
            raise InputError("max_targets and max_interference must be >= 0")
        if self.max_targets * self.min_duplicate_separation_deg > 360.0:
            raise InputError(f"{self.max_targets} same-class targets cannot be "
                             f"{self.min_duplicate_separation_deg}° apart on a circle")


@dataclass(frozen=True)
class EventSpec:
    """One event of a recipe.

    Attributes:
        role: ``'target'`` or ``'interference'``.
        label: class name, or ``'interference'``.
        clip: the pool clip.
        source_offset: first clip sample played.
        n_samples: samples played (clip length capped at the soundscape length).
        onset: soundscape sample where the event starts.
        azimuth_deg, elevation_deg, distance_m: direction and distance from the array.
        snr_db: level over the background (module conventions).
    """

    role: str
    label: str
    clip: Clip
    source_offset: int
    n_samples: int
    onset: int
    azimuth_deg: float
    elevation_deg: float
    distance_m: float
    snr_db: float


@dataclass(frozen=True)
class SoundscapeSpec:
    """A full recipe: room, events (targets first), background, render seed and the render
    settings (image-source order, peak limit, oracle window); lengths and offsets in
    samples."""

    name: str
    split: str
    seed: int
    n_samples: int
    sample_rate_hz: int
    room: RoomSpec
    noise: Clip
    noise_offset: int
    noise_level_dbfs: float
    render_seed: int
    ism_order: int
    peak_limit: float
    oracle_window_ms: Optional[tuple[float, float]]
    events: tuple[EventSpec, ...] = field(default_factory=tuple)

    @property
    def targets(self) -> tuple[EventSpec, ...]:
        """Target events in oracle order (index i of ``<name>_<i>_<Label>.wav``)."""
        return tuple(e for e in self.events if e.role == "target")


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _pick(rng: np.random.Generator, clips: tuple[Clip, ...], used: set[str]) -> Clip:
    fresh = [c for c in clips if c.path not in used] or list(clips)
    clip = fresh[int(rng.integers(len(fresh)))]
    used.add(clip.path)
    return clip


def _direction(rng: np.random.Generator, room: RoomSpec, cfg: SoundscapeConfig,
               avoid_deg: list[float]) -> tuple[float, float, float]:
    lo = np.full(3, cfg.wall_margin_m)
    hi = np.asarray(room.dims_m) - cfg.wall_margin_m
    for _ in range(_MAX_TRIES):
        az = _uniform(rng, (-180.0, 180.0))
        el = _uniform(rng, cfg.elevation_deg)
        dist = _uniform(rng, cfg.distance_m)
        gaps = [abs((az - a + 180.0) % 360.0 - 180.0) for a in avoid_deg]
        pos = position_from_direction(room.mic_m, az, el, dist)
        if all(g >= cfg.min_duplicate_separation_deg for g in gaps) and \
                np.all(pos >= lo) and np.all(pos <= hi):
            return az, el, dist
    raise InputError(f"could not place a source in room {room.dims_m} m with array at "
                     f"{room.mic_m} after {_MAX_TRIES} draws; widen the room ranges or shrink "
                     "distance_m / wall_margin_m")


def _event(rng: np.random.Generator, role: str, label: str, clip: Clip, n_samples: int,
           room: RoomSpec, cfg: SoundscapeConfig, avoid_deg: list[float]) -> EventSpec:
    n_ev = min(clip.n_samples, n_samples)
    offset = int(rng.integers(clip.n_samples - n_ev + 1))
    onset = int(rng.integers(n_samples - n_ev + 1))
    az, el, dist = _direction(rng, room, cfg, avoid_deg)
    snr = _uniform(rng, cfg.target_snr_db if role == "target" else cfg.interference_snr_db)
    return EventSpec(role, label, clip, offset, n_ev, onset, az, el, dist, snr)


def sample_soundscape(name: str, part: PoolSplit, seed: int, n_samples: int,
                      sample_rate_hz: int, cfg: Optional[SoundscapeConfig] = None
                      ) -> SoundscapeSpec:
    """Draw one recipe (module conventions).

    Args:
        name: soundscape name, e.g. ``'soundscape_00000'``.
        part: the pool split to draw clips from.
        seed: seeds ``np.random.default_rng``; the whole recipe follows from it.
        n_samples: soundscape length in samples.
        sample_rate_hz: sample rate (Hz).
        cfg: distributions; defaults to `SoundscapeConfig()`.

    Raises:
        InputError: a source cannot be placed in the drawn room.
    """
    cfg = cfg or SoundscapeConfig()
    rng = np.random.default_rng(seed)
    dims = (_uniform(rng, cfg.room_length_m), _uniform(rng, cfg.room_width_m),
            _uniform(rng, cfg.room_height_m))
    rt60 = _uniform(rng, cfg.rt60_s)
    m = cfg.array_margin_m
    mic = (_uniform(rng, (m, dims[0] - m)), _uniform(rng, (m, dims[1] - m)),
           _uniform(rng, (1.2, min(1.8, dims[2] - cfg.wall_margin_m))))
    room = RoomSpec(dims, rt60, mic)
    zero = rng.random() < cfg.zero_target_prob or cfg.max_targets == 0
    n_targets = 0 if zero else int(rng.integers(1, cfg.max_targets + 1))
    n_interference = int(rng.integers(cfg.max_interference + 1))
    classes = list(part.targets)
    events: list[EventSpec] = []
    used: set[str] = set()
    for _ in range(n_targets):
        label = classes[int(rng.integers(len(classes)))]
        clip = _pick(rng, part.targets[label], used)
        avoid = [e.azimuth_deg for e in events if e.label == label]
        events.append(_event(rng, "target", label, clip, n_samples, room, cfg, avoid))
    for _ in range(n_interference):
        clip = _pick(rng, part.interference, used)
        events.append(_event(rng, "interference", "interference", clip, n_samples, room, cfg,
                             []))
    noise = _pick(rng, part.noise, used)
    noise_offset = int(rng.integers(noise.n_samples))
    level = _uniform(rng, cfg.noise_level_dbfs)
    render_seed = int(rng.integers(2 ** 63))
    return SoundscapeSpec(name, part.name, seed, n_samples, sample_rate_hz, room, noise,
                          noise_offset, level, render_seed, cfg.ism_order, cfg.peak_limit,
                          cfg.oracle_window_ms, tuple(events))
