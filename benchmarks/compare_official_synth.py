"""casdri's soundscape generator against the official synthesizer, on the same recordings
and the same rooms: median SNR(mixture W, oracle target) and the floors of each.

The official DCASE 2026 Task 4 data come from nttcslab/SpAudSyn, driven by the baseline's
``DatasetS3`` in ``generate`` mode (nttcslab/dcase2026_task4_baseline
``config/separation/resunetk_capisdr.yaml``: ``ref_db -55``, ``snr_range [5, 20]``,
``inteference_snr_range [0, 15]``, ``ninterference_range [0, 2]``, ``dupse_rate 0.5``,
``max_n_dupse 2``, ``dupse_min_angle 60``, ``SofaRoom`` with ``direct_range_ms [6, 50]``,
``fg_return {dry: true, dry_channel: 0}``). This script runs that code from the user's
checkouts (copied into its scratch folder; casdri holds none of it) on an official-layout
folder it writes from casdri's inputs:

* ``foreground/<Label>/<clip>/<clip>.wav`` and ``interference/interference/...``: the pool
  split's clips, one sub-folder each, so the official duplicate rule
  (``dupse_exclusion_folder_depth 1``) draws a duplicate from another clip, as casdri's does.
  A class with one clip cannot be duplicated there (the official code stops with an
  ``AssertionError``); such a draw is redrawn and counted;
* ``background/<clip>.wav``: each background clip of the split made 4-channel by casdri's
  `cache_builder.soundscapes.rooms.diffuse_foa_noise` (24-bit PCM: the official code reads
  backgrounds with Python's ``wave``);
* ``room_ir/<room>.sofa``: casdri's FOA RIRs (`simulate_foa_rirs`) of the split's room bank
  (`room_bank`), one SOFA ``GeneralFIR`` file per room, sources on a grid of directions at the
  official distances (0.75 and 1.5 m), positions relative to the array centre.

It generates ``--n`` soundscapes with the official code (``nevent_range [0, 3]``, the
zero-target share of casdri's default), writes them in casdri's split layout, and reads both
splits with `cache_builder.soundscapes.stats.split_difficulty` (casdri's metric): SNR of the
mixture W against each oracle target, the all-silent floor with oracle labels, the
least-squares-gain floor and the ideal-ratio-mask ceiling. casdri's split is ``--ours`` (a
folder ``casdri-cache generate`` wrote from the same pool split) or generated here.

Needs the official code's own packages in the running Python: ``librosa``, ``python-sofa``
(``netCDF4``), ``pytz``, ``pyyaml``, torch; e.g. a virtual environment made with
``--system-site-packages`` over casdri's, plus ``pip install librosa python-sofa``.
A script printing figures, never a test.

Usage::

    python benchmarks/compare_official_synth.py --pool POOL --baseline BASELINE_CHECKOUT \\
        --spaudsyn SPAUDSYN_CHECKOUT [--ours GEN/dev] [--split dev] [--n 300] [--seed 0] \\
        [--work DIR] [--azimuth-step 15] [--jobs 2]
"""
from __future__ import annotations

import argparse
import importlib.util
import random
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from casdri.errors import InputError  # noqa: E402
from casdri.layout import ORACLE_DIR, SOUNDSCAPE_DIR, WAV  # noqa: E402
from casdri.labels import get_label_set  # noqa: E402

FS = 32000
#: the official generate-mode settings (module docstring), nevent_range as casdri's default
OFFICIAL = dict(dupse_rate=0.5, dupse_min_angle=60.0, max_n_dupse=2,
                dupse_exclusion_folder_depth=1, snr_range=[5, 20], nevent_range=[0, 3],
                ninterference_range=[0, 2], inteference_snr_range=[0, 15],
                shuffle_label=True, fg_return={"dry": True, "dry_channel": 0, "metadata": True})
ELEVATIONS_DEG = (-20.0, 0.0, 20.0, 40.0)  # casdri's elevation range (-20, 40), on a grid


def official_tree(baseline: Path, spaudsyn: Path, work: Path) -> Path:
    """The baseline's ``src`` with SpAudSyn's ``src`` placed where the baseline imports it
    (``src/modules/spatial_audio_synthesizer``), copied under ``work``."""
    for path, probe in ((baseline, "src/datamodules/dataset.py"),
                        (spaudsyn, "src/spatial_audio_synthesizer.py")):
        if not (path / probe).is_file():
            raise InputError(f"{path}: no {probe}; pass a checkout of the official repository")
    tree = work / "official"
    if tree.exists():
        shutil.rmtree(tree)
    shutil.copytree(baseline / "src", tree / "src")
    shutil.copytree(spaudsyn / "src", tree / "src/modules/spatial_audio_synthesizer",
                    dirs_exist_ok=True)
    return tree


def _positions(room, azimuth_step: float, distances, wall_margin: float) -> np.ndarray:
    from cache_builder.soundscapes.rooms import direction_unit
    lo = np.full(3, wall_margin)
    hi = np.asarray(room.dims_m) - wall_margin
    rel = []
    for dist in distances:
        for el in ELEVATIONS_DEG:
            for az in np.arange(-180.0, 180.0, azimuth_step):
                p = dist * direction_unit(float(az), el)
                if np.all(np.asarray(room.mic_m) + p >= lo) and \
                        np.all(np.asarray(room.mic_m) + p <= hi):
                    rel.append(p)
    return np.asarray(rel)


def _room_sofa(args) -> str:
    """Simulate one room's RIRs and write its SOFA file (a joblib task)."""
    room_id, room, path, azimuth_step, seed, cfg = args
    import sofa

    from cache_builder.soundscapes.rooms import simulate_foa_rirs
    rel = _positions(room, azimuth_step, cfg.distance_m, cfg.wall_margin_m)
    rng = np.random.default_rng([seed, 7])
    rirs = simulate_foa_rirs(room, np.asarray(room.mic_m) + rel, FS, rng, cfg.ism_order,
                             max_taps=10 * FS, capsule_radius_m=cfg.capsule_radius_m)
    n_taps = max(r.full.shape[1] for r in rirs)
    ir = np.zeros((len(rirs), 4, n_taps))
    for m, r in enumerate(rirs):
        ir[m, :, :r.full.shape[1]] = r.full
    tmp = path.with_suffix(".part")
    db = sofa.Database.create(str(tmp), "GeneralFIR",
                              dimensions={"M": len(rirs), "R": 4, "N": n_taps})
    db.Listener.initialize(fixed=["Position", "View", "Up"])
    db.Source.initialize(variances=["Position"], fixed=["View", "Up"])
    db.Receiver.initialize(fixed=["Position"])
    db.Emitter.initialize(fixed=["Position"], count=1)
    db.Data.initialize()
    db.Data.IR = ir
    db.Data.SamplingRate = FS
    db.Source.Position.set_values(rel, system="cartesian")
    db.close()
    tmp.replace(path)
    return f"{room_id}: {len(rirs)} positions, {n_taps} taps"


def write_layout(pool_dir: Path, split: str, seed: int, data: Path, azimuth_step: float,
                 jobs: int) -> Path:
    """The official-layout input folder (module docstring) from casdri's pool and rooms."""
    from joblib import Parallel, delayed

    from cache_builder.soundscapes.pool import load_pool, read_clip
    from cache_builder.soundscapes.rooms import diffuse_foa_noise
    from cache_builder.soundscapes.scene import SoundscapeConfig, room_bank

    pool = load_pool(pool_dir, get_label_set("dcase2026t4"), FS)
    part = pool.splits[split]
    cfg = SoundscapeConfig()
    if data.exists():
        shutil.rmtree(data)

    def put(clip, folder: Path) -> None:
        out = folder / Path(clip.path).stem / (Path(clip.path).stem + WAV)
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, read_clip(pool.root, clip), FS, subtype="FLOAT")

    for label, clips in part.targets.items():
        for clip in clips:
            put(clip, data / "foreground" / label)
    for clip in part.interference:
        put(clip, data / "interference" / "interference")
    rng = np.random.default_rng([seed, 11])
    (data / "background").mkdir(parents=True)
    for clip in part.noise:
        foa = diffuse_foa_noise(read_clip(pool.root, clip), rng)
        foa *= 0.5 / max(float(np.max(np.abs(foa))), 1e-12)
        sf.write(data / "background" / (Path(clip.path).stem + WAV), foa.T, FS,
                 subtype="PCM_24")
    (data / "room_ir").mkdir(parents=True)
    rooms = room_bank(seed, split, cfg)
    tasks = [(rid, room, data / "room_ir" / f"{rid}.sofa", azimuth_step, seed, cfg)
             for rid, room in rooms]
    t0 = time.perf_counter()
    for line in Parallel(n_jobs=jobs)(delayed(_room_sofa)(t) for t in tasks):
        print(f"  room {line}", flush=True)
    n_targets = sum(len(c) for c in part.targets.values())
    print(f"official-layout input: {len(part.targets)} classes, {n_targets} target clips, "
          f"{len(part.interference)} interference, {len(part.noise)} background, "
          f"{len(rooms)} rooms ({time.perf_counter() - t0:.0f} s of RIRs)", flush=True)
    return data


def generate_official(tree: Path, data: Path, out: Path, n: int, seed: int) -> Path:
    """``n`` soundscapes from the official ``DatasetS3`` (generate mode) in casdri's split
    layout: ``soundscape/``, ``oracle_target/`` and ``metadata.parquet``."""
    from tqdm import tqdm
    sys.path.insert(0, str(tree))
    from src.datamodules.dataset import DatasetS3  # the official code

    scene = dict(duration=10.0, sr=FS, max_event_overlap=3, max_event_dur=10.0, ref_db=-55,
                 foreground_dir=str(data / "foreground"),
                 background_dir=str(data / "background"),
                 interference_dir=str(data / "interference"),
                 room_config={"module": "src.modules.spatial_audio_synthesizer.room",
                              "main": "SofaRoom",
                              "args": {"path": str(data / "room_ir"),
                                       "direct_range_ms": [6, 50]}})
    config = dict(mode="generate", spatial_sound_scene=scene, dataset_length=n, **OFFICIAL)
    ds = DatasetS3(config, n_sources=3, label_set="dcase2026t4", label_vector_mode="concat",
                   return_source=True)
    random.seed(seed)
    np.random.seed(seed)
    if out.exists():
        shutil.rmtree(out)
    (out / SOUNDSCAPE_DIR).mkdir(parents=True)
    (out / ORACLE_DIR).mkdir()
    rows, redrawn = [], 0
    for i in tqdm(range(n), desc="official synthesizer", file=sys.stderr):
        while True:
            try:
                with warnings.catch_warnings():  # "NO EVENT ADDED" before the assertion
                    warnings.simplefilter("ignore", UserWarning)
                    item = ds[i]
                break
            except AssertionError:  # a duplicate of a class with one clip (module docstring)
                redrawn += 1
        name = f"official_{i:05d}"
        sf.write(out / SOUNDSCAPE_DIR / f"{name}{WAV}", item["mixture"].numpy().T, FS,
                 subtype="FLOAT")
        rows.append({"soundscape": name, "role": "noise", "label": "", "oracle_file": ""})
        for k, label in enumerate(item["label"]):
            if label == "silence":
                continue
            f = f"{name}_{k}_{label}{WAV}"
            sf.write(out / ORACLE_DIR / f, item["dry_sources"][k, 0].numpy(), FS,
                     subtype="FLOAT")
            rows.append({"soundscape": name, "role": "target", "label": label,
                         "oracle_file": f})
    pd.DataFrame(rows).to_parquet(out / "metadata.parquet", index=False)
    print(f"official synthesizer: {n} soundscapes, {redrawn} draws redrawn (a duplicate of a "
          "class with one clip)", flush=True)
    return out


MARKER = ".compare_official_synth"


def _scratch(work: Path) -> Path:
    """``work``, made by this script (it replaces its ``official``, ``data``,
    ``official_split`` and ``ours`` sub-folders on every run): a folder it did not make, not
    empty, is refused, so a user's own ``data/`` is never deleted."""
    if work.exists() and not (work / MARKER).is_file() and (
            not work.is_dir() or any(work.iterdir())):
        raise InputError(f"--work {work}: exists and was not made by this script; the script "
                         "replaces sub-folders of its scratch folder: give a new or empty one")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("scratch folder of benchmarks/compare_official_synth.py\n")
    return work


def _targets_per_soundscape(split_dir: Path, limit=None) -> np.ndarray:
    """``(n_targets,)``: how many targets the soundscape of each target holds, aligned with
    `split_difficulty`'s ``snr_mix_db`` (its soundscape order, its row order)."""
    from cache_builder.soundscapes.metadata import METADATA_FILES
    table = pd.read_parquet(split_dir / METADATA_FILES[0])
    names = sorted(table["soundscape"].unique())[:limit]
    per = table[table["role"] == "target"].groupby("soundscape").size()
    return np.concatenate([np.full(int(per.get(n, 0)), int(per.get(n, 0))) for n in names])


def _line(name: str, d) -> str:
    q1, q3 = np.percentile(d.snr_mix_db, [25, 75])
    return (f"{name:<22} {d.n_soundscapes:>5} {d.n_targets:>7} {d.median_snr_mix_db:>+9.2f} "
            f"[{q1:+6.2f}, {q3:+6.2f}] {d.silent_floor_db:>+8.2f} {d.gain_floor_db:>+8.2f} "
            f"{d.ideal_mask_db:>+8.2f} {d.silence_tagger_pct:>7.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", required=True, help="casdri's recording pool (make_pool --out)")
    ap.add_argument("--baseline", required=True, help="nttcslab/dcase2026_task4_baseline "
                    "checkout")
    ap.add_argument("--spaudsyn", required=True, help="nttcslab/SpAudSyn checkout")
    ap.add_argument("--ours", help="a split folder casdri-cache generate wrote from --pool "
                    "(default: generate --n here)")
    ap.add_argument("--split", default="dev", choices=("train", "dev", "test"))
    ap.add_argument("--n", type=int, default=300, help="soundscapes per side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--azimuth-step", type=float, default=15.0,
                    help="degrees between the SOFA grid's source azimuths")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", default="official_synth_work",
                    help="scratch folder, new or made by an earlier run of this script")
    args = ap.parse_args(argv)

    missing = [m for m in ("librosa", "sofa", "pytz") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"compare_official_synth: the official code needs {missing}: "
                         "python -m pip install librosa python-sofa pytz")
    from cache_builder.soundscapes.stats import split_difficulty

    work = _scratch(Path(args.work))
    t0 = time.perf_counter()
    tree = official_tree(Path(args.baseline), Path(args.spaudsyn), work)
    data = write_layout(Path(args.pool), args.split, args.seed, work / "data",
                        args.azimuth_step, args.jobs)
    t_layout = time.perf_counter() - t0
    t0 = time.perf_counter()
    official_dir = generate_official(tree, data, work / "official_split", args.n, args.seed)
    t_official = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.ours:
        ours_dir = Path(args.ours)
    else:
        from cache_builder.soundscapes.generate import generate_soundscapes
        generate_soundscapes(args.pool, work / "ours", {args.split: args.n}, seed=args.seed,
                             n_jobs=args.jobs, overwrite=True)
        ours_dir = work / "ours" / args.split
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = split_difficulty(official_dir)
    ours = split_difficulty(ours_dir, limit=args.n)
    t_stats = time.perf_counter() - t0

    print(f"\nsame recordings ({args.pool}, split {args.split}) and rooms; casdri's metric; "
          "dB")
    print(f"{'generator':<22} {'soundscapes':>5} {'targets':>7} {'median SNR':>9} "
          f"{'[quartiles]':>16} {'silent':>8} {'gain':>8} {'IRM':>8} {'0-target %':>7}")
    print(_line("official (SpAudSyn)", theirs))
    print(_line("casdri generator", ours))
    counts = (_targets_per_soundscape(official_dir), _targets_per_soundscape(ours_dir, args.n))
    for k in (1, 2, 3):
        cells = [f"{np.median(d.snr_mix_db[c == k]):+6.2f} dB ({int(np.sum(c == k))} targets)"
                 if np.any(c == k) else "     - (no target)"
                 for d, c in zip((theirs, ours), counts)]
        print(f"  median SNR, soundscapes of {k} target(s): official {cells[0]}, casdri "
              f"{cells[1]}")
    gap = ours.median_snr_mix_db - theirs.median_snr_mix_db
    print(f"median SNR(mixture W, oracle target): casdri - official = {gap:+.2f} dB "
          f"(target: within 1 dB: {'met' if abs(gap) <= 1.0 else 'MISSED'}); silent floor "
          f"{ours.silent_floor_db - theirs.silent_floor_db:+.2f} dB")
    print(f"time: layout and RIRs {t_layout:.0f} s, official synthesizer {t_official:.0f} s, "
          f"casdri generator {t_ours:.0f} s, figures {t_stats:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except InputError as exc:
        raise SystemExit(f"compare_official_synth: error: {exc}") from None
