"""DCASE 2026 Task 4 (S5)-format soundscapes from a pool of real recordings.

Conventions:
    * Output, per split (``train``, ``dev``, ``test``)::

          <out>/<split>/soundscape/<name>.wav                 4 ch W Y Z X, FLOAT, 32 kHz
          <out>/<split>/oracle_target/<name>_<i>_<Label>.wav  mono FLOAT, i = 0.. per soundscape
          <out>/<split>/stems/<name>_<k>_<label>.wav          4 ch, only with write_stems:
                                                               every event k, then the noise
          <out>/<split>/metadata.parquet, metadata.csv        one row per event + background

      Names are ``soundscape_00000`` (at least 5 digits, one width per split). A zero-target
      soundscape has no oracle file. Each soundscape is 10 s (``duration_s``) of a simulated
      shoebox room recorded by a tetrahedral array converted to FOA (`.rooms`); recipes in
      `.scene`, rendering and oracle targets in `.render`, pool layout and split partition
      in `.pool` (modules of `cache_builder.soundscapes`).
    * **Reproducible**: ``SeedSequence(seed).spawn(3)`` gives one sequence per split (in the
      order train, dev, test, whichever are asked for), whose ``spawn(n)`` gives one seed per
      soundscape (recorded in the metadata column ``seed``); soundscape ``i`` does not depend
      on ``n``, ``n_jobs`` or the other splits. Same arguments and library versions →
      bit-identical files (WAV written without timestamps; pyroomacoustics single-threaded).
    * Provenance: every row names the soundscape's ``room`` (an id of the split's room bank,
      `cache_builder.soundscapes.scene.room_bank`) and the ``recording`` (pool group id,
      `cache_builder.soundscapes.pool`) its clip comes from;
      `cache_builder.soundscapes.metadata.read_provenance` gives them per soundscape (the
      events' recordings, not the background's), for the cache's soundscapes table.
    * Files are written atomically (`casdri._io.atomic_path`).
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.io import wavfile
from tqdm import tqdm

from casdri._io import atomic_path
from casdri.errors import InputError
from casdri.labels import LabelSet, get_label_set
from casdri.layout import ORACLE_DIR, SOUNDSCAPE_DIR, WAV, stem_name

from .metadata import BACKGROUND, METADATA_COLUMNS, METADATA_FILES, write_metadata
from .pool import SPLITS, PoolSplit, SourcePool, load_pool
from .render import RenderedSoundscape, render_soundscape
from .scene import SoundscapeConfig, SoundscapeSpec, room_bank, sample_soundscape


_NAME_PREFIX = re.compile(r"[A-Za-z0-9-]+")
__all__ = ["soundscape_seeds", "write_wav", "generate_soundscapes"]

PathLike = Union[str, "os.PathLike[str]"]
#: every event image and the background, with ``write_stems``
STEMS_DIR = "stems"
_OUR_DIRS = (SOUNDSCAPE_DIR, ORACLE_DIR, STEMS_DIR)


def write_wav(path: PathLike, data: np.ndarray, sample_rate_hz: int,
              subtype: str = "FLOAT") -> None:
    """Write a WAV atomically (`casdri._io.atomic_path`).

    Args:
        path: target ``.wav`` path.
        data: ``(n_samples,)`` or ``(n_channels, n_samples)`` float samples.
        sample_rate_hz: sample rate (Hz).
        subtype: ``'FLOAT'`` (IEEE float32) or ``'PCM_16'`` (rounded, clipped to ±1).

    ``scipy.io.wavfile`` writes no timestamp (libsndfile's float PEAK chunk holds one), so
    equal data give equal bytes.
    """
    path = Path(path)
    frames = np.asarray(data, dtype=np.float64)
    frames = frames.T if frames.ndim == 2 else frames
    if subtype == "FLOAT":
        frames = frames.astype(np.float32)
    elif subtype == "PCM_16":
        frames = np.clip(np.round(frames * 32767.0), -32768, 32767).astype(np.int16)
    else:
        raise InputError(f"subtype must be 'FLOAT' or 'PCM_16', got {subtype!r}")
    with atomic_path(path, mkdir=False) as tmp:
        wavfile.write(tmp, sample_rate_hz, np.ascontiguousarray(frames))


def soundscape_seeds(seed: int, split: str, n: int) -> list[int]:
    """Per-soundscape seeds of ``split`` (module conventions).

    Args:
        seed: root seed (int >= 0).
        split: ``'train'``, ``'dev'`` or ``'test'``.
        n: number of soundscapes.

    Returns:
        ``n`` ints in ``[0, 2**63)``; the first ``k`` do not depend on ``n``.
    """
    seq = np.random.SeedSequence(seed).spawn(len(SPLITS))[SPLITS.index(split)]
    return [int(child.generate_state(1, np.uint64)[0] >> np.uint64(1)) for child in seq.spawn(n)]


def _rows(spec: SoundscapeSpec, audio: RenderedSoundscape) -> list[dict]:
    fs, room = spec.sample_rate_hz, spec.room
    common = dict(split=spec.split, soundscape=spec.name, rt60_s=room.rt60_s,
                  room_x_m=room.dims_m[0], room_y_m=room.dims_m[1], room_z_m=room.dims_m[2],
                  mic_x_m=room.mic_m[0], mic_y_m=room.mic_m[1], mic_z_m=room.mic_m[2],
                  seed=spec.seed, room=spec.room_id)
    rows = []
    for k, e in enumerate(spec.events):
        oracle = stem_name(spec.name, k, e.label) if e.role == "target" else ""
        rows.append(dict(common, event=k, role=e.role, label=e.label, source_file=e.clip.path,
                         source_offset_s=e.source_offset / fs, onset_s=e.onset / fs,
                         duration_s=e.n_samples / fs, azimuth_deg=e.azimuth_deg,
                         elevation_deg=e.elevation_deg, distance_m=e.distance_m,
                         snr_db=e.snr_db, level_dbfs=audio.levels_dbfs[k], oracle_file=oracle,
                         recording=e.clip.group))
    rows.append(dict(common, event=len(spec.events), role=BACKGROUND, label="noise",
                     source_file=spec.noise.path, source_offset_s=spec.noise_offset / fs,
                     onset_s=0.0, duration_s=spec.n_samples / fs, azimuth_deg=math.nan,
                     elevation_deg=math.nan, distance_m=math.nan, snr_db=math.nan,
                     level_dbfs=audio.levels_dbfs[-1], oracle_file="",
                     recording=spec.noise.group))
    return rows


def _make_one(spec: SoundscapeSpec, pool_root: str, split_dir: str,
              write_stems: bool) -> list[dict]:
    """Render and write one soundscape; return its metadata rows (runs in a worker)."""
    out = Path(split_dir)
    audio = render_soundscape(spec, Path(pool_root))
    fs = spec.sample_rate_hz
    write_wav(out / SOUNDSCAPE_DIR / f"{spec.name}{WAV}", audio.mixture, fs)
    for i, (event, oracle) in enumerate(zip(spec.targets, audio.oracles)):
        write_wav(out / ORACLE_DIR / stem_name(spec.name, i, event.label), oracle, fs)
    if write_stems:
        for k, (event, image) in enumerate(zip(spec.events, audio.images)):
            write_wav(out / STEMS_DIR / stem_name(spec.name, k, event.label), image, fs)
        write_wav(out / STEMS_DIR / stem_name(spec.name, len(spec.events), "noise"),
                  audio.noise, fs)
    return _rows(spec, audio)


def _split_counts(n_soundscapes: Union[int, Mapping[str, int]]) -> dict[str, int]:
    if isinstance(n_soundscapes, Mapping):
        unknown = set(n_soundscapes) - set(SPLITS)
        if unknown:
            raise InputError(f"n_soundscapes: unknown split(s) {sorted(unknown)}; "
                             f"expected keys among {list(SPLITS)}")
        counts = {s: n_soundscapes[s] for s in SPLITS if s in n_soundscapes}
    else:
        n = n_soundscapes
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(f"n_soundscapes must be an int >= 0 or a dict, got {n!r}")
        n_dev = n_test = int(round(0.2 * n))
        counts = {"train": n - n_dev - n_test, "dev": n_dev, "test": n_test}
    for s, n in counts.items():
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(f"n_soundscapes[{s!r}] must be an int >= 0, got {n!r}")
    return {s: int(n) for s, n in counts.items() if n > 0}


def _check_split(part: PoolSplit, n: int, cfg: SoundscapeConfig, pool: SourcePool) -> None:
    where = f"{part.root} (split {part.name!r}, {n} soundscape(s) asked)"
    if not part.noise:
        raise InputError(f"{where}: no noise clip in this split; add clips to noise/")
    if cfg.max_interference > 0 and not part.interference:
        raise InputError(f"{where}: no interference clip in this split; add clips to "
                         "interference/ or set max_interference=0")
    if cfg.max_targets > 0 and cfg.zero_target_prob < 1.0 and not part.targets:
        raise InputError(f"{where}: no target clip in this split; add clips to "
                         "sound_event/<Class>/ (3 recordings per class fill every split)")
    in_pool = {c for p in pool.splits.values() for c in p.targets}
    absent = sorted(in_pool - set(part.targets))
    if part.targets and absent:
        warnings.warn(f"split {part.name!r}: no clip for class(es) {', '.join(absent)} "
                      "(too few recordings in the pool) cannot appear in it", stacklevel=3)


def _existing(split_dir: Path) -> list[Path]:
    return [split_dir / d for d in _OUR_DIRS if (split_dir / d).exists()] + \
        [split_dir / f for f in METADATA_FILES if (split_dir / f).exists()]


def _prepare_dir(split_dir: Path, write_stems: bool) -> None:
    for path in _existing(split_dir):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for d in _OUR_DIRS if write_stems else _OUR_DIRS[:2]:
        (split_dir / d).mkdir(parents=True, exist_ok=True)


def generate_soundscapes(
    sources_dir: PathLike,
    out_dir: PathLike,
    n_soundscapes: Union[int, Mapping[str, int]],
    seed: int = 0,
    duration_s: float = 10.0,
    sample_rate_hz: int = 32000,
    *,
    config: Optional[SoundscapeConfig] = None,
    n_jobs: int = 1,
    write_stems: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    label_set: Union[str, LabelSet] = "dcase2026t4",
    min_confidence: Optional[str] = None,
    name_prefix: str = "soundscape",
) -> pd.DataFrame:
    """Generate DCASE 2026 Task 4-format soundscapes (module conventions).

    Args:
        sources_dir: pool of real recordings (`cache_builder.soundscapes.pool` layout, e.g.
            ``bed_sources``).
        out_dir: output root; ``<out_dir>/<split>/`` is written per split.
        n_soundscapes: ``{'train': n, 'dev': n, 'test': n}`` (any subset), or an int split
            60/20/20 (``n_dev = n_test = round(0.2 n)``).
        seed: root seed (int >= 0).
        duration_s: soundscape length in seconds.
        sample_rate_hz: sample rate (Hz); the pool must already be at this rate.
        config: distributions and rules (`SoundscapeConfig`; default: the official DCASE
            2026 Task 4 rules; `SoundscapeConfig.casdri_v1` for casdri's first generator).
        n_jobs: joblib processes (``-1``: all cores); results do not depend on it.
        write_stems: also write every event image and the background (4 ch) to ``stems/``.
        overwrite: replace ``soundscape/``, ``oracle_target/``, ``stems/`` and the metadata
            of a split folder that already has them.
        progress: show a tqdm bar on stderr.
        label_set: class folder names must be classes of this set.
        min_confidence: keep manifest rows at least this confident (``'high'``...).
        name_prefix: soundscape ``i`` is named ``<name_prefix>_<i>`` (zero-padded to 5
            digits); only the names change, not the audio. Give splits that will share one
            cache different prefixes (``--name-prefix eval`` for a held-out split).

    Returns:
        The metadata of every split written: columns `METADATA_COLUMNS`, one row per event
        and one ``role == 'noise'`` row per soundscape; times in s, angles in degrees.

    Raises:
        InputError: bad arguments (``seed``, ``duration_s``, ``n_jobs``, counts), a pool
            with the wrong layout or an empty class folder, a
            split without noise/interference/target clips, an existing output.
        AudioFileError: a clip that is not mono or not at ``sample_rate_hz``.

    A run that fails or is interrupted (Ctrl-C; SIGTERM too under the ``casdri-cache``
    command, which turns it into an exception) removes what it wrote: the split folders hold
    a whole generated split or nothing (the audio follows from the seed, so running the
    command again gives the same files). With ``overwrite``, a split not yet reached keeps
    what it held.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an int >= 0, got {seed!r}")
    if not (isinstance(duration_s, (int, float)) and duration_s > 0):
        raise InputError(f"duration_s must be > 0, got {duration_s!r}")
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise InputError(f"n_jobs must be a non-zero int (-1: all cores), got {n_jobs!r}")
    cfg = config or SoundscapeConfig()
    labels = get_label_set(label_set)
    counts = _split_counts(n_soundscapes)
    pool = load_pool(sources_dir, labels, sample_rate_hz, min_confidence)
    if not _NAME_PREFIX.fullmatch(str(name_prefix)):
        raise InputError(f"name prefix {name_prefix!r}: use letters, digits and '-' only "
                         "(it starts every soundscape and stem file name)")
    n_samples = int(round(duration_s * sample_rate_hz))
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a folder; choose another --out")
    for split, n in counts.items():  # check everything before touching any folder
        _check_split(pool.splits[split], n, cfg, pool)
        found = _existing(Path(out_dir) / split)
        if found and not overwrite:
            raise InputError(f"{Path(out_dir) / split}: already holds {found[0].name}; rerun "
                             "with --overwrite (overwrite=True in Python) to replace the "
                             "generated folders, or choose another --out")
    created = [p for p in [Path(out_dir), *(Path(out_dir) / s for s in counts)] if not p.exists()]
    cleared: list[str] = []  # the splits whose folders this run has emptied (and writes)
    try:
        return _generate(pool, counts, out_dir, seed, n_samples, sample_rate_hz, cfg,
                         write_stems, n_jobs, progress, name_prefix, cleared)
    except BaseException:  # Ctrl-C, SIGTERM, a bad clip: leave no half-written split behind
        for split in cleared:  # a split not yet cleared still holds what it held
            for path in _existing(Path(out_dir) / split):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()  # only folders this run made, and only when empty
        raise


def _generate(pool, counts, out_dir, seed, n_samples, sample_rate_hz, cfg, write_stems, n_jobs,
              progress, name_prefix, cleared: list) -> pd.DataFrame:
    """The work of `generate_soundscapes` once its arguments are checked; appends to
    ``cleared`` each split whose folder it empties."""
    specs, dirs = [], []
    for split, n in counts.items():
        split_dir = Path(out_dir) / split
        cleared.append(split)
        _prepare_dir(split_dir, write_stems)
        width = max(5, len(str(n - 1)))
        rooms = room_bank(seed, split, cfg)
        for i, s in enumerate(soundscape_seeds(seed, split, n)):
            specs.append(sample_soundscape(f"{name_prefix}_{i:0{width}d}", pool.splits[split], s,
                                           n_samples, sample_rate_hz, cfg, rooms))
            dirs.append(str(split_dir))
    work = [(spec, str(pool.root), d, write_stems) for spec, d in zip(specs, dirs)]
    if n_jobs == 1 or len(work) <= 1:
        results = (_make_one(*w) for w in work)
    else:
        results = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_make_one)(*w) for w in work)
    rows: list[dict] = []
    for r in tqdm(results, total=len(work), disable=not progress, file=sys.stderr,
                  unit="soundscape", desc="casdri-cache generate"):
        rows.extend(r)
    table = pd.DataFrame(rows, columns=list(METADATA_COLUMNS))
    for split in counts:
        write_metadata(table[table["split"] == split].reset_index(drop=True),
                       Path(out_dir) / split)
    return table
