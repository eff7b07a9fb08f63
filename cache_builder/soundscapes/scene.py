"""Random soundscape recipes: what plays where, when and how loud (no audio here).

Conventions:
    * A recipe (`SoundscapeSpec`) is drawn from ``np.random.default_rng(seed)`` in a fixed
      order, so a seed, a pool split and the split's room bank determine it completely;
      rendering it (`cache_builder.soundscapes.render_soundscape`) is deterministic too.
    * **Official rules** (the defaults; facts read from nttcslab/dcase2026_task4_baseline
      ``config/label/m2dat_4c.yaml`` and ``src/datamodules/dataset.py``, code our own):
      ``n`` targets uniform in 0..``max_targets`` (3), i.e. a zero-target share of
      ``zero_target_prob`` = 1/4 as in the official tagger data; with ``n >= 2`` and
      probability ``duplicate_rate`` (0.5), ``k`` uniform in 1..min(n − 1, ``max_duplicates``
      = 2) of them repeat a class of the other ``n − k`` (whose classes are distinct), from
      another clip and at least ``min_duplicate_separation_deg`` (60°, angle between
      directions) from every event of that class. When the split has fewer classes than
      distinct labels are needed, the shortfall becomes duplicates. Interference: 0..2
      events at 0–15 dB; targets at 5–20 dB; sources at 0.75 m or 1.5 m (``distance_m``
      with ``distance_mode = 'choice'``). Background: one clip of the split's ``noise/``,
      looped from a random offset. Rooms: a bank of ``rooms_per_split`` rooms per split
      (`room_bank`), each soundscape in one of them, so splits never share a room.
    * `SoundscapeConfig.casdri_v1` keeps casdri's first generator for reproduction: 20 %
      zero-target, 1..3 targets with independently drawn (possibly repeated) classes 60°
      apart in azimuth, distances uniform in 0.75–2.5 m, a new room per soundscape.
    * An event plays ``min(clip length, soundscape length)`` samples from a uniformly drawn
      clip offset, at a uniformly drawn onset so that it ends inside the soundscape; its
      reverberant tail continues to the end of the soundscape.
    * Levels (``snr_db``, set by `cache_builder.soundscapes.render`): ``snr_rule =
      'official'`` — mean power over the 4 channels of the whole convolved event (clip
      length + RIR length − 1 samples) over the mean power over the 4 channels of the
      background, which sits at ``noise_level_dbfs`` (the reference level) before the
      soundscape-wide peak limit (a common gain that keeps every SNR); ``'w_active'``
      (v1) — W power over the event's active span over the background's W power.
    * Geometry: room sides and RT60 uniform in their ranges; the array at least
      ``array_margin_m`` from the walls at height 1.2–1.8 m; a source at uniform azimuth and
      elevation and a drawn distance, redrawn until it is ``wall_margin_m`` inside the room.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from casdri.errors import InputError

from .pool import SPLITS, Clip, PoolSplit
from .rooms import RoomSpec, direction_unit, position_from_direction

__all__ = ["SNR_RULES", "DISTANCE_MODES", "SoundscapeConfig", "EventSpec", "SoundscapeSpec",
           "room_bank", "sample_soundscape"]

SNR_RULES = ("official", "w_active")
DISTANCE_MODES = ("choice", "uniform")
_MAX_TRIES = 2000


@dataclass(frozen=True)
class SoundscapeConfig:
    """Distributions and rules of the generator (module conventions; ranges ``(low, high)``
    are drawn uniformly). Defaults: the official DCASE 2026 Task 4 rules.

    Attributes:
        zero_target_prob: probability of a soundscape without target events (official tagger
            data: 1/4, the share of 0 in ``nevent_range: [0, 3]``).
        max_targets: most target events; 1..max_targets uniform otherwise.
        duplicate_rate: probability that a soundscape with >= 2 targets repeats classes;
            ``None``: classes drawn independently per target (v1).
        max_duplicates: most repeated targets in one soundscape.
        min_duplicate_separation_deg: least angle between same-class targets, degrees
            (official: between directions; v1: azimuth gap).
        max_interference: most interference events in one soundscape.
        target_snr_db: target level over the background, dB (rule ``snr_rule``).
        interference_snr_db: interference level over the background, dB.
        snr_rule: ``'official'`` or ``'w_active'`` (module conventions).
        rt60_s: nominal reverberation time, s.
        room_length_m, room_width_m, room_height_m: room sides x, y, z, m.
        rooms_per_split: rooms in each split's bank; ``None``: a new room per soundscape (v1).
        distance_m: source distances from the array centre, m: the values to choose from
            (``distance_mode = 'choice'``) or a ``(low, high)`` range (``'uniform'``).
        distance_mode: ``'choice'`` or ``'uniform'``.
        elevation_deg: source elevation, degrees.
        array_margin_m: least distance of the array from a wall (horizontally), m.
        wall_margin_m: least distance of a source from any wall, floor or ceiling, m.
        noise_level_dbfs: background reference level before the peak limit, dBFS (4-channel
            mean power with ``'official'``, W power with ``'w_active'``).
        peak_limit: largest absolute mixture sample after the common gain.
        ism_order: image-source order simulated exactly (then a diffuse tail).
        oracle_window_ms: ``(before, after)``: the oracle target uses channel 0 (W) of the
            RIR cut to ``[peak − before, peak + after]`` ms around its largest absolute sample
            (official ``direct_range_ms: [6, 50]``, ``dry_channel: 0``); ``None``: the direct
            path only (image order 0, v1).
        capsule_radius_m: tetrahedral array radius, m (`cache_builder.soundscapes.rooms`);
            0: coincident capsules, exact SN3D FOA at every frequency.

    Raises:
        InputError: a value out of its domain, naming the field.
    """

    zero_target_prob: float = 0.25
    max_targets: int = 3
    duplicate_rate: Optional[float] = 0.5
    max_duplicates: int = 2
    min_duplicate_separation_deg: float = 60.0
    max_interference: int = 2
    target_snr_db: tuple[float, float] = (5.0, 20.0)
    interference_snr_db: tuple[float, float] = (0.0, 15.0)
    snr_rule: str = "official"
    rt60_s: tuple[float, float] = (0.2, 0.8)
    room_length_m: tuple[float, float] = (3.0, 7.0)
    room_width_m: tuple[float, float] = (3.0, 6.0)
    room_height_m: tuple[float, float] = (2.5, 3.5)
    rooms_per_split: Optional[int] = 8
    distance_m: tuple[float, ...] = (0.75, 1.5)
    distance_mode: str = "choice"
    elevation_deg: tuple[float, float] = (-20.0, 40.0)
    array_margin_m: float = 0.8
    wall_margin_m: float = 0.3
    noise_level_dbfs: tuple[float, float] = (-45.0, -35.0)
    peak_limit: float = 0.95
    ism_order: int = 12
    oracle_window_ms: Optional[tuple[float, float]] = (6.0, 50.0)
    capsule_radius_m: float = 0.0

    @classmethod
    def casdri_v1(cls, **changes) -> "SoundscapeConfig":
        """casdri's first generator (module conventions), with ``changes`` applied."""
        v1 = dict(zero_target_prob=0.2, duplicate_rate=None, snr_rule="w_active",
                  rooms_per_split=None, distance_m=(0.75, 2.5), distance_mode="uniform",
                  oracle_window_ms=None, capsule_radius_m=0.0147)
        return cls(**{**v1, **changes})

    def replace(self, **changes) -> "SoundscapeConfig":
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> InputError:
            return InputError(f"SoundscapeConfig.{name} must be {want}, got "
                              f"{getattr(self, name)!r}")

        if not 0.0 <= self.zero_target_prob <= 1.0:
            raise bad("zero_target_prob", "in [0, 1]")
        for name in ("max_targets", "max_interference", "max_duplicates"):
            if not isinstance(getattr(self, name), (int, np.integer)) or getattr(self, name) < 0:
                raise bad(name, "an int >= 0")
        if self.duplicate_rate is not None and not 0.0 <= self.duplicate_rate <= 1.0:
            raise bad("duplicate_rate", "in [0, 1] or None")
        if self.snr_rule not in SNR_RULES:
            raise bad("snr_rule", f"one of {SNR_RULES}")
        if self.distance_mode not in DISTANCE_MODES:
            raise bad("distance_mode", f"one of {DISTANCE_MODES}")
        if not self.distance_m or not all(math.isfinite(d) and d > 0 for d in self.distance_m):
            raise bad("distance_m", "distances > 0 m")
        if self.distance_mode == "uniform" and (len(self.distance_m) != 2 or
                                                self.distance_m[0] > self.distance_m[1]):
            raise bad("distance_m", "a (low, high) range with distance_mode='uniform'")
        for name in ("target_snr_db", "interference_snr_db", "rt60_s", "room_length_m",
                     "room_width_m", "room_height_m", "elevation_deg", "noise_level_dbfs"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise bad(name, "a finite (low, high) range with low <= high")
        if self.rooms_per_split is not None and (
                not isinstance(self.rooms_per_split, (int, np.integer)) or
                self.rooms_per_split < 1):
            raise bad("rooms_per_split", "an int >= 1 or None")
        w = self.oracle_window_ms
        if w is not None and (len(w) != 2 or not all(math.isfinite(v) and v >= 0 for v in w)):
            raise InputError(f"SoundscapeConfig.oracle_window_ms must be None or (before, "
                             f"after) in ms, both >= 0 (official: 6 50), got {w!r}")
        if not (math.isfinite(self.capsule_radius_m) and self.capsule_radius_m >= 0):
            raise bad("capsule_radius_m", "a distance >= 0 m")
        if self.duplicate_rate is None and \
                self.max_targets * self.min_duplicate_separation_deg > 360.0:
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
    """A full recipe: room (with its id), events (targets first), background, render seed
    and the render settings (image-source order, peak limit, oracle window, SNR rule,
    capsule radius); lengths and offsets in samples."""

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
    room_id: str = ""
    snr_rule: str = "official"
    capsule_radius_m: float = 0.0

    @property
    def targets(self) -> tuple[EventSpec, ...]:
        """Target events in oracle order (index i of ``<name>_<i>_<Label>.wav``)."""
        return tuple(e for e in self.events if e.role == "target")

    @property
    def recordings(self) -> tuple[str, ...]:
        """Sorted recording ids (pool groups) of every event and the background."""
        return tuple(sorted({e.clip.group for e in self.events} | {self.noise.group}))


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _pick(rng: np.random.Generator, clips: tuple[Clip, ...], used: set[str]) -> Clip:
    fresh = [c for c in clips if c.path not in used] or list(clips)
    clip = fresh[int(rng.integers(len(fresh)))]
    used.add(clip.path)
    return clip


def _draw_room(rng: np.random.Generator, cfg: SoundscapeConfig) -> RoomSpec:
    dims = (_uniform(rng, cfg.room_length_m), _uniform(rng, cfg.room_width_m),
            _uniform(rng, cfg.room_height_m))
    rt60 = _uniform(rng, cfg.rt60_s)
    m = cfg.array_margin_m
    mic = (_uniform(rng, (m, dims[0] - m)), _uniform(rng, (m, dims[1] - m)),
           _uniform(rng, (1.2, min(1.8, dims[2] - cfg.wall_margin_m))))
    return RoomSpec(dims, rt60, mic)


def room_bank(seed: int, split: str, cfg: SoundscapeConfig) -> tuple[tuple[str, RoomSpec], ...]:
    """The rooms of ``split`` (``cfg.rooms_per_split`` of them): ``(room id, room)`` pairs.

    Room ``k`` of split ``s`` is drawn from ``default_rng([seed, index of s, 1, k])``; its id
    is ``'<s>-room<k>'``, so no two splits share a room. Empty when ``rooms_per_split`` is
    ``None`` (each soundscape draws its own room, id = soundscape name).
    """
    if cfg.rooms_per_split is None:
        return ()
    return tuple((f"{split}-room{k:02d}",
                  _draw_room(np.random.default_rng([seed, SPLITS.index(split), 1, k]), cfg))
                 for k in range(cfg.rooms_per_split))


def _angle_deg(a: tuple[float, float], b: tuple[float, float]) -> float:
    cos = float(np.dot(direction_unit(*a), direction_unit(*b)))
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def _direction(rng: np.random.Generator, room: RoomSpec, cfg: SoundscapeConfig,
               avoid: list[tuple[float, float]]) -> tuple[float, float, float]:
    lo = np.full(3, cfg.wall_margin_m)
    hi = np.asarray(room.dims_m) - cfg.wall_margin_m
    for _ in range(_MAX_TRIES):
        az = _uniform(rng, (-180.0, 180.0))
        el = _uniform(rng, cfg.elevation_deg)
        if cfg.distance_mode == "uniform":
            dist = _uniform(rng, (cfg.distance_m[0], cfg.distance_m[1]))
        else:
            dist = float(cfg.distance_m[int(rng.integers(len(cfg.distance_m)))])
        if cfg.duplicate_rate is None:  # v1: azimuth gap
            gaps = [abs((az - a + 180.0) % 360.0 - 180.0) for a, _ in avoid]
        else:
            gaps = [_angle_deg((az, el), a) for a in avoid]
        pos = position_from_direction(room.mic_m, az, el, dist)
        if all(g >= cfg.min_duplicate_separation_deg for g in gaps) and \
                np.all(pos >= lo) and np.all(pos <= hi):
            return az, el, dist
    raise InputError(f"could not place a source in room {room.dims_m} m with array at "
                     f"{room.mic_m} after {_MAX_TRIES} draws; widen the room ranges or shrink "
                     "distance_m / wall_margin_m")


def _event(rng: np.random.Generator, role: str, label: str, clip: Clip, n_samples: int,
           room: RoomSpec, cfg: SoundscapeConfig,
           avoid: list[tuple[float, float]]) -> EventSpec:
    n_ev = min(clip.n_samples, n_samples)
    offset = int(rng.integers(clip.n_samples - n_ev + 1))
    onset = int(rng.integers(n_samples - n_ev + 1))
    az, el, dist = _direction(rng, room, cfg, avoid)
    snr = _uniform(rng, cfg.target_snr_db if role == "target" else cfg.interference_snr_db)
    return EventSpec(role, label, clip, offset, n_ev, onset, az, el, dist, snr)


def _target_count(rng: np.random.Generator, n_classes: int, cfg: SoundscapeConfig) -> int:
    zero = rng.random() < cfg.zero_target_prob or cfg.max_targets == 0 or n_classes == 0
    return 0 if zero else int(rng.integers(1, cfg.max_targets + 1))


def _official_labels(rng: np.random.Generator, classes: list[str], n: int,
                     cfg: SoundscapeConfig) -> list[str]:
    """``n`` target classes: distinct, then duplicates of them (module conventions)."""
    n_dup = 0
    if n >= 2 and rng.random() < cfg.duplicate_rate:
        n_dup = int(rng.integers(1, min(n - 1, cfg.max_duplicates) + 1))
    n_distinct = min(n - n_dup, len(classes))
    distinct = [classes[i] for i in rng.choice(len(classes), n_distinct, replace=False)]
    return distinct + [distinct[int(rng.integers(n_distinct))] for _ in range(n - n_distinct)]


def sample_soundscape(name: str, part: PoolSplit, seed: int, n_samples: int,
                      sample_rate_hz: int, cfg: Optional[SoundscapeConfig] = None,
                      rooms: Sequence[tuple[str, RoomSpec]] = ()) -> SoundscapeSpec:
    """Draw one recipe (module conventions).

    Args:
        name: soundscape name, e.g. ``'soundscape_00000'``.
        part: the pool split to draw clips from.
        seed: seeds ``np.random.default_rng``; the whole recipe follows from it.
        n_samples: soundscape length in samples.
        sample_rate_hz: sample rate (Hz).
        cfg: distributions; defaults to `SoundscapeConfig()`.
        rooms: the split's `room_bank`; empty: draw a room for this soundscape alone.

    Raises:
        InputError: a source cannot be placed in the drawn room.
    """
    cfg = cfg or SoundscapeConfig()
    rng = np.random.default_rng(seed)
    if rooms:
        room_id, room = rooms[int(rng.integers(len(rooms)))]
    else:
        room_id, room = name, _draw_room(rng, cfg)
    classes = list(part.targets)
    n_targets = _target_count(rng, len(classes), cfg)
    n_interference = int(rng.integers(cfg.max_interference + 1))
    labels = None if cfg.duplicate_rate is None else \
        _official_labels(rng, classes, n_targets, cfg)
    events: list[EventSpec] = []
    used: set[str] = set()
    for i in range(n_targets):  # v1 draws each class just before its clip
        label = classes[int(rng.integers(len(classes)))] if labels is None else labels[i]
        clip = _pick(rng, part.targets[label], used)
        avoid = [(e.azimuth_deg, e.elevation_deg) for e in events if e.label == label]
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
                          cfg.oracle_window_ms, tuple(events), room_id, cfg.snr_rule,
                          cfg.capsule_radius_m)
