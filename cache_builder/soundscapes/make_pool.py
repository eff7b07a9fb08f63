"""Rebuild a pool of real recordings (the ``bed_sources`` layout) from Debian packages.

Conventions:
    * Sources: the Debian 12 (bookworm, ``main``) packages named in `RULES`, fetched with
      ``apt-get download`` into ``--debs`` (kept, so a rebuild downloads nothing) and
      unpacked with ``dpkg-deb -x``. A `Rule` maps the package files whose path matches its
      regular expression to a pool category and class, with the licence and credit of those
      files (read from the package's ``/usr/share/doc/<package>/copyright``) and a label
      confidence (``high``: the file is that sound; ``medium``: a game or sample-pack
      version of it; ``low``: a stand-in, e.g. a door for a cupboard). A rule matches one
      copy of a recording: where a package (or another package) ships the same recording
      under several names (copies, velocity layers, voice packs sharing a file), only one
      is matched, since each matched file becomes its own split group.
    * Optionally ``--base`` (e.g. ``../shared/bed_sources`` beside a casdri checkout): its clips and manifest rows
      are copied first, and package files already listed in its ``original_file`` column
      are skipped, so no recording enters twice.
    * Each new clip: mixed down to mono, resampled to 32 kHz (``scipy.signal.resample_poly``),
      leading/trailing silence trimmed (below −50 dB of the peak, 10 ms kept), cut to at
      most 10 s, 10 ms fades, peak-normalised to −1 dBFS, 16-bit FLAC, named
      ``<category>[/<Class>]/<package>_<file stem>.flac``; clips under 0.15 s are dropped.
    * Output: the clips, ``manifest.csv`` (one row per clip: path, category, class,
      source_package, original_file, license, duration_s, kind, confidence, orig_sr, note)
      and ``LICENSES.md`` (the base's, then a table of the packages added here).
    * `recording_counts` counts recordings (split groups of `cache_builder.soundscapes.pool`)
      per class and split: what the generator can draw from.

Usage: ``python -m cache_builder.soundscapes.make_pool --out POOL [--base DIR] [--debs DIR]``
"""
from __future__ import annotations

import argparse
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import signal

from casdri._io import atomic_path, atomic_write_text
from casdri.errors import InputError
from casdri.labels import DCASE2026T4

from .pool import SPLITS, load_pool

__all__ = ["Rule", "RULES", "MANIFEST_COLUMNS", "prepare_clip", "build_pool",
           "recording_counts", "main"]

SAMPLE_RATE_HZ = 32000
MANIFEST_COLUMNS = ("path", "category", "class", "source_package", "original_file", "license",
                    "duration_s", "kind", "confidence", "orig_sr", "note")
_AUDIO = re.compile(r"\.(ogg|wav|flac|mp3)$", re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    """Package files → pool clips (module conventions).

    Attributes:
        package: Debian package name.
        pattern: regular expression searched in the file path inside the package.
        category: ``'sound_event'``, ``'interference'`` or ``'noise'``.
        label: class name for ``sound_event``, else the category.
        license: SPDX-like licence of the matched files.
        credit: rights holders, from the package's copyright file.
        confidence: ``'high'``, ``'medium'`` or ``'low'``.
        note: what the files are.
    """

    package: str
    pattern: str
    category: str
    label: str
    license: str
    credit: str
    confidence: str
    note: str = ""


_HW = "Andrey Korotaev and the Hedgewars project"
_MT = "minetest_game contributors (see mods/*/README.txt in the package)"
RULES: tuple[Rule, ...] = (
    # Russian_pl/PoisonCough.ogg is the same recording as Default_pl's (cross-correlation
    # 1.00), so it would be a second split group of one recording.
    Rule("hedgewars-data", r"Sounds/voices/(?!Russian_pl/)[^/]+/PoisonCough\.ogg$",
         "sound_event", "Cough", "GFDL-1.3", _HW, "medium",
         "game voice pack: poisoned hedgehog coughing"),
    Rule("hedgewars-data", r"Sounds/steps\.ogg$", "sound_event", "FootSteps", "GFDL-1.3",
         _HW, "medium", "game footsteps"),
    Rule("lmms-common", r"samples/misc/applause01\.ogg$", "sound_event", "Clapping",
         "GPL-2+", "LMMS developers", "high", "recorded applause"),
    Rule("lmms-common", r"samples/drums/clap0[1-4]\.ogg$", "sound_event", "Clapping",
         "GPL-2+", "LMMS developers", "low", "drum-machine hand clap"),
    Rule("lugaru-data", r"Sounds/FootStep(Grass|Snow|Stone)[12]\.ogg$", "sound_event",
         "FootSteps", "CC-BY-SA-3.0", "Wolfire Games", "high", "recorded footsteps"),
    Rule("minetest-data", r"mods/doors/sounds/doors_[a-z_]*door_(open|close)\.ogg$",
         "sound_event", "CupboardOpenClose", "CC-BY-SA-3.0 / CC0-1.0", _MT, "low",
         "door opening/closing as a cupboard stand-in"),
    Rule("scratch", r"Effects/Door(Close|Creak)\.(mp3|wav)$", "sound_event",
         "CupboardOpenClose", "CC-BY-SA-3.0", "Massachusetts Institute of Technology",
         "low", "door as a cupboard stand-in"),
    Rule("supertux-data", r"sounds/door\.wav$", "sound_event", "CupboardOpenClose",
         "GPL-2+ / CC-BY-SA-3.0", "SuperTux developers", "low", "door stand-in"),
    Rule("sonic-pi-samples", r"samples/perc_bell2?\.flac$", "sound_event", "BicycleBell",
         "CC0-1.0", "freesound.org users (Sonic Pi samples README)", "low",
         "small struck bell as a bicycle-bell stand-in"),
    Rule("supertux-data", r"sounds/savebell(2|_low)\.wav$", "sound_event", "BicycleBell",
         "GPL-2+ / CC-BY-SA-3.0", "SuperTux developers", "low", "bell stand-in"),
    Rule("lomiri-sounds", r"ringtones/Alarm synth\.ogg$", "sound_event", "AlarmClock",
         "CC-BY-SA-3.0", "Canonical Ltd.", "medium", "synthesised alarm tone"),
    Rule("lomiri-sounds", r"ringtones/(Bliss|Celestial|Counterpoint|Harmonics|Latin|Marimbach|"
         r"Soul|Sparkle|Supreme|Ubuntu)\.ogg$", "sound_event", "AlarmClock", "CC-BY-SA-3.0",
         "Canonical Ltd.", "low", "phone ringtone as an alarm stand-in"),
    Rule("oxygen-sounds", r"Oxygen-Im-Phone-Ring\.ogg$", "sound_event", "AlarmClock",
         "LGPL-3.0-or-later", "Nuno Filipe Povoa", "low", "phone ring as an alarm stand-in"),
    Rule("gambas3-examples", r"examples/Games/Concent/applause\.wav$", "sound_event",
         "Clapping", "GPL-2+", "Jairo Alonso Badillo Bedoya (gambas3 example Concent)",
         "medium", "recorded applause (game sound)"),
    Rule("foobillardplus-data", r"foobillardplus/data/applause\.wav$", "sound_event",
         "Clapping", "GPL-2", "Florian Berger", "medium", "recorded applause (game sound)"),
    Rule("gemdropx", r"gemdropx/sounds/applause\.wav$", "sound_event", "Clapping", "GPL-2",
         "Justin C. Kibell and others", "medium", "recorded applause (game sound)"),
    Rule("hydrogen-drumkits", r"drumkits/Millo-Drums_v\.1/clap_Dry_c\.flac$", "sound_event",
         "Clapping", "GPL-2", "Emiliano Grilli (Millo-Drums kit)", "medium",
         "one dry hand clap, drum-kit sample"),
    Rule("hydrogen-drumkits", r"drumkits/HardElectro1/Clap_1\.flac$", "sound_event",
         "Clapping", "GPL-2+", "Artemiy Pavlov (Artemio, HardElectro1 kit)", "low",
         "electronic drum-kit clap, possibly processed or synthesised"),
    # one velocity layer per glass: the layers of a glass are one recording
    Rule("hydrogen-drumkits", r"drumkits/Gimme A Hand 1\.0/Waterglass(Hi|Lo)-Hard\.wav$",
         "sound_event", "Dishes", "GPL-2", "Glen MacArthur (Gimme A Hand kit)", "medium",
         "a drinking glass with water, struck (percussion-kit sample)"),
    Rule("triplea", r"political_action_successful_01_typewriter\.mp3$", "sound_event",
         "Typing", "GPL-2+", "TripleA authors (Sean Bridges et al.)", "medium",
         "typewriter typing (game sound)"),
    Rule("minetest-mod-unified-inventory", r"unified_inventory/sounds/dingdong\.ogg$",
         "sound_event", "Doorbell", "LGPL-2.1+", "Maciej Kasatkin (RealBadAngel), VanessaE",
         "medium", "two-tone ding-dong chime (game sound)"),
    Rule("brainparty-data", r"brainparty/wrong3?\.wav$", "sound_event", "Buzzer", "GPL-3+",
         "Paul Hudson", "low",
         "quiz game's wrong-answer sound: a short ~120 Hz buzz; source not documented"),
    Rule("libreoffice-common", r"gallery/sounds/glasses\.wav$", "sound_event", "Dishes",
         "MPL-2.0", "Oracle and/or its affiliates (LibreOffice gallery)", "medium",
         "glasses clinking: tableware, not plates or cutlery"),
    Rule("qabcs-data", r"abcs/all/noises/vase\.ogg$", "sound_event", "Dishes", "GPL-3+",
         "DanSoft (qABCs)", "low", "a ceramic vase struck twice, as a dishes stand-in"),
    Rule("qabcs-data", r"abcs/all/noises/grand_piano\.ogg$", "sound_event",
         "MusicalKeyboard", "GPL-3+", "DanSoft (qABCs)", "high", "grand piano phrase"),
    Rule("gnome-shell-pomodoro-data", r"gnome-pomodoro/sounds/loud-bell\.ogg$",
         "sound_event", "BicycleBell", "GPL-3+", "gnome-pomodoro contributors", "low",
         "one strike of a small bell (timer sound), as a bicycle-bell stand-in"),
    Rule("hedgewars-data", r"Sounds/voices/(British|Mobster|Pirate)/(Hello|Incoming)\.ogg$",
         "interference", "interference", "GFDL-1.3", _HW, "high",
         "game voice lines, used as non-target speech-like events"),
)


def prepare_clip(data: np.ndarray, sample_rate_hz: int) -> Optional[np.ndarray]:
    """One clip as the pool stores it (module conventions), or ``None`` when too short.

    Args:
        data: ``(n,)`` or ``(n, channels)`` float samples at ``sample_rate_hz``.
        sample_rate_hz: rate of ``data`` (Hz).

    Returns:
        ``(m,) float64`` at 32 kHz, peak 10^(−1/20), at most 10 s.
    """
    x = np.asarray(data, dtype=np.float64)
    x = x.mean(axis=1) if x.ndim == 2 else x
    if sample_rate_hz != SAMPLE_RATE_HZ:
        ratio = Fraction(SAMPLE_RATE_HZ, sample_rate_hz).limit_denominator(1000)
        x = signal.resample_poly(x, ratio.numerator, ratio.denominator)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak <= 0.0 or not math.isfinite(peak):
        return None
    loud = np.flatnonzero(np.abs(x) >= peak * 10 ** (-50 / 20))
    margin = SAMPLE_RATE_HZ // 100
    x = x[max(0, loud[0] - margin):loud[-1] + margin + 1][:10 * SAMPLE_RATE_HZ]
    if x.shape[0] < int(0.15 * SAMPLE_RATE_HZ):
        return None
    fade = np.linspace(0.0, 1.0, margin)
    x[:margin] *= fade
    x[-margin:] *= fade[::-1]
    return x * (10 ** (-1 / 20) / np.max(np.abs(x)))


def _download(packages: Sequence[str], debs: Path) -> dict[str, Path]:
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
    return {p: sorted(debs.glob(f"{p}_*.deb"))[-1] for p in packages}


def _unpack(deb: Path, into: Path) -> Path:
    if not into.is_dir():
        into.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into


def _base_rows(base: Path, out: Path) -> list[dict]:
    table = pd.read_csv(base / "manifest.csv", dtype=str, keep_default_na=False)
    for rel in table["path"]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / rel, out / rel)
    return table.to_dict("records")


def build_pool(out: Path, debs: Path, base: Optional[Path] = None,
               rules: Sequence[Rule] = RULES) -> pd.DataFrame:
    """Build the pool in ``out`` (module conventions); return its manifest.

    Raises:
        InputError: ``out`` already holds a manifest.
        subprocess.CalledProcessError: ``apt-get download`` or ``dpkg-deb`` failed.
    """
    out, debs = Path(out), Path(debs)
    if (out / "manifest.csv").exists():
        raise InputError(f"{out}: already holds a pool (manifest.csv); choose a new --out")
    for cat in ("sound_event", "interference", "noise"):
        (out / cat).mkdir(parents=True, exist_ok=True)
    rows = _base_rows(base, out) if base is not None else []
    seen = {o for r in rows for o in r.get("original_file", "").split(";") if o}
    debfiles = _download(sorted({r.package for r in rules}), debs)
    for rule in rules:
        root = _unpack(debfiles[rule.package], debs / "x" / rule.package)
        for f in sorted(p for p in root.rglob("*") if p.is_file() and _AUDIO.search(p.name)):
            original = f.relative_to(root).as_posix()
            if original in seen or not re.search(rule.pattern, original):
                continue
            data, sr = sf.read(f, dtype="float64")
            clip = prepare_clip(data, sr)
            if clip is None:
                continue
            folder = f"sound_event/{rule.label}" if rule.category == "sound_event" \
                else rule.category
            rel = f"{folder}/{rule.package}_{re.sub(r'[^A-Za-z0-9]+', '_', f.stem)}.flac"
            if rule.package == "hedgewars-data":  # one file name per voice pack
                rel = rel.replace(".flac", f"_{f.parent.name}.flac")
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(out / rel) as tmp:
                sf.write(tmp, clip, SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")
            seen.add(original)
            rows.append(dict(path=rel, category=rule.category, **{"class": rule.label},
                             source_package=rule.package, original_file=original,
                             license=f"{rule.license} ({rule.credit})",
                             duration_s=f"{clip.shape[0] / SAMPLE_RATE_HZ:.3f}",
                             kind="recorded", confidence=rule.confidence, orig_sr=str(sr),
                             note=rule.note))
    table = pd.DataFrame(rows).reindex(columns=list(MANIFEST_COLUMNS)).fillna("")
    _write_licences(out, base, rules, debfiles)
    with atomic_path(out / "manifest.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


def _write_licences(out: Path, base: Optional[Path], rules: Sequence[Rule],
                    debfiles: dict[str, Path]) -> None:
    head = (base / "LICENSES.md").read_text() if base is not None else \
        "# Licences and attribution of this pool\n"
    lines = ["", "## Added by `cache_builder.soundscapes.make_pool`", "",
             "Same processing as above (mono, 32 kHz, trimmed, at most 10 s, faded, "
             "peak −1 dBFS, 16-bit FLAC); `manifest.csv` names the original file of each "
             "clip. Authoritative texts: `/usr/share/doc/<package>/copyright`.", "",
             "| package (version) | used for | rights holders / credit | licence |",
             "|---|---|---|---|"]
    for pkg in sorted(debfiles):
        version = debfiles[pkg].name.split("_")[1].replace("%3a", ":")
        mine = [r for r in rules if r.package == pkg]
        used = ", ".join(sorted({r.label for r in mine}))
        credit = "; ".join(sorted({r.credit for r in mine}))
        lic = "; ".join(sorted({r.license for r in mine}))
        lines.append(f"| {pkg} ({version}) | {used} | {credit} | {lic} |")
    atomic_write_text(out / "LICENSES.md", head.rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def recording_counts(pool_dir: Path) -> pd.DataFrame:
    """Recordings (split groups) per class (rows, label-set order) and split (columns)."""
    pool = load_pool(pool_dir, DCASE2026T4, SAMPLE_RATE_HZ)
    counts = {s: {c: len({clip.group for clip in pool.splits[s].targets.get(c, ())})
                  for c in DCASE2026T4.classes} for s in SPLITS}
    return pd.DataFrame(counts).loc[list(DCASE2026T4.classes)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build a pool and print its recording counts; return the exit code."""
    p = argparse.ArgumentParser(prog="python -m cache_builder.soundscapes.make_pool",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="new pool folder")
    p.add_argument("--base", type=Path, default=None, help="pool whose clips are copied first")
    p.add_argument("--debs", type=Path, default=Path("runs/debs"),
                   help="where .deb files are downloaded and unpacked (default runs/debs)")
    args = p.parse_args(argv)
    try:
        table = build_pool(args.out, args.debs, args.base)
    except InputError as err:
        print(f"make_pool: error: {err}", file=sys.stderr)
        return 1
    print(f"{args.out}: {len(table)} clips")
    print(recording_counts(args.out).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
