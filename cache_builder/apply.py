"""Live apply: run a policy with the real models on a folder and write the submission stems.

Conventions:
    * The policy's plain-Python ``decide(inputs, params, lookup)`` (`casdri.policies`) runs
      per soundscape; ``lookup(query, separator, stage)`` separates the **canonical** query
      (sorted ascending, as the cache) on demand and memoises it, so only what the policy asks
      for is separated, each (query, separator) once (all stages come from that one pass).
    * The values ``decide`` sees are the cache's: tagger and retagger softmax rounded to
      float32, ``energy_db`` from float64 sums over the float32 stem, separators and stages
      in system-YAML order. The same policy therefore decides the same on the cache and live.
    * Output: ``<soundscape>_<i>_<Label>.wav`` for each kept slot, ``i`` counting the kept
      stems of that soundscape from 0 in slot order; mono float32 WAV (subtype FLOAT) at the
      system rate. Silence slots are not written. The zip holds the stems at its root.
"""
from __future__ import annotations

import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile as sf
import yaml

from casdri.errors import CacheError, PolicyError
from casdri.folders import parse_stem_name

from .runner import (iter_soundscapes, resolve_folder, scan_soundscapes, separate_items,
                     tag_soundscapes)
from .system import System, load_system, set_threads

__all__ = ["apply_policy", "ApplyReport", "load_policy", "LiveLookup"]


@dataclass
class ApplyReport:
    """What a live run did.

    Attributes:
        out: stem folder; zip_path: the submission zip or ``None``.
        n_soundscapes, n_stems: soundscapes processed, stem files written.
        decisions: soundscape → list of written labels (in file-index order).
        passes: forward passes by kind (tagger items, separator items, stages, retag).
        capi_sdri: live CAPI-SDRi when an oracle folder was given; score: its
            `casdri.CapiSdriResult`.
        seconds: wall time.
    """

    out: Path
    zip_path: Optional[Path]
    n_soundscapes: int
    n_stems: int
    decisions: dict = field(default_factory=dict)
    passes: dict = field(default_factory=dict)
    capi_sdri: Optional[float] = None
    score: object = None
    seconds: float = 0.0

    def summary(self) -> str:
        per = ", ".join(f"{k} {v / max(self.n_soundscapes, 1):.1f}"
                        for k, v in self.passes.items())
        s = (f"{self.out}: {self.n_stems} stems for {self.n_soundscapes} soundscapes in "
             f"{self.seconds:.1f} s; passes per soundscape: {per or '-'}")
        if self.zip_path is not None:
            s += f"; zip {self.zip_path}"
        if self.capi_sdri is not None:
            s += f"; live CAPI-SDRi {self.capi_sdri:.4f} dB"
        return s


def load_policy(path: Union[str, Path], label_set):
    """``(policy module, params)`` from a policy YAML ``{policy, label_set, params}``
    (`casdri.policies.load_policy_yaml`, with the file named in errors).

    Raises:
        PolicyError: unreadable file, no ``policy`` key, an unknown policy, bad parameters.
    """
    from casdri.policies import load_policy_yaml
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy YAML {path} does not exist")
    try:
        return load_policy_yaml(path, label_set)
    except PolicyError as e:
        raise PolicyError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise PolicyError(f"{path}: not valid YAML ({e})") from None


class LiveLookup:
    """``lookup(query, separator, stage) -> [SlotStem]`` backed by the real models.

    One instance per soundscape; ``n_separations`` counts (query, separator) forwards.
    """

    def __init__(self, system: System, name: str, mixture: np.ndarray,
                 refs: Optional[np.ndarray]):
        self.system, self.name, self.mixture, self.refs = system, name, mixture, refs
        self.separators = list(system.spec.separators)
        self.memo: dict = {}

    def __call__(self, query, separator: int, stage: int):
        from casdri.policies._base import SlotStem
        q = tuple(sorted(int(x) for x in query))
        if not q:
            return []
        if not 0 <= separator < len(self.separators):
            raise PolicyError(f"separator index {separator}: the system has "
                              f"{self.separators}")
        if not 0 <= stage < 1 + len(self.system.stages):
            raise PolicyError(f"stage {stage}: the system has {1 + len(self.system.stages)} "
                              "stages (0 = separator output)")
        key = (q, separator)
        if key not in self.memo:
            self.memo[key] = separate_items(
                self.system, self.separators[separator], [self.mixture], [q], [self.refs],
                keep_waveforms=True, where=f" on {self.name}")[0]
        info = self.memo[key][stage]
        return [SlotStem.from_retag(q[i], float(info.energy_db[i]), info.retag[i],
                                    ref=info.waveforms[i]) for i in range(len(q))]

    @property
    def n_separations(self) -> int:
        return len(self.memo)


def _prepare_out(out: Path, names: list[str], overwrite: bool, label_set) -> None:
    if out.exists() and not out.is_dir():
        raise CacheError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    existing = [p for p in out.glob("*.wav")]
    if existing and not overwrite:
        raise CacheError(f"{out} already holds {len(existing)} .wav files; choose an empty "
                         "--out or pass --overwrite")
    wanted = set(names)
    for p in existing:
        try:
            sc, _, _ = parse_stem_name(p.name, wanted, label_set)
        except Exception:  # noqa: BLE001 - a file of another soundscape: keep it
            continue
        p.unlink()


def apply_policy(system: Union[str, Path, System], policy: Union[str, Path],
                 soundscapes: Union[str, Path], out: Union[str, Path], *,
                 zip_name: Optional[str] = None, oracle: Union[str, Path, None, bool] = None,
                 device: Optional[str] = None, tag_batch_size: int = 1, jobs: int = 0,
                 amp: bool = False, overwrite: bool = False, threads: Optional[int] = None,
                 progress: bool = False) -> ApplyReport:
    """Run ``policy`` live on every soundscape of a folder and write its stems (and zip).

    Args:
        system: system YAML or loaded `System`.
        policy: policy YAML (``{policy: refine, label_set: ..., params: {...}}``).
        soundscapes: folder of ``<name>.wav``, or a split folder (``soundscape/`` and maybe
            ``oracle_target/``; `cache_builder.runner.resolve_folder`).
        out: stem folder (created; must be empty unless ``overwrite``).
        zip_name: also write a submission zip; a bare name goes next to ``out``.
        oracle: oracle folder: also score the written stems (`casdri.scoring.score_folders`)
            and give the oracle labels to the ``oracle`` policy. ``None``: a split folder's
            ``oracle_target/`` if any; ``False``: none.
        device, amp: as in `cache_builder.build.build_cache`.
        tag_batch_size: soundscapes per tagger forward (1, as `build_cache`'s default, gives
            the cache's tagger values bit for bit).
        jobs: DataLoader workers reading audio.
        overwrite: allow a non-empty ``out`` (stems of these soundscapes are replaced).
        threads: ``torch.set_num_threads`` for this run; ``None`` keeps torch's.
        progress: tqdm bar on stderr.

    Returns:
        `ApplyReport`.

    Raises:
        PolicyError: bad policy YAML; CacheError: ``out`` not empty; model, audio and folder
            errors as in `build_cache`.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    set_threads(threads)
    sysm = system if isinstance(system, System) else load_system(system, device, amp)
    spec = sysm.spec
    module, params = load_policy(policy, spec.label_set)
    layout = resolve_folder(soundscapes, oracle)
    oracle = layout.oracle
    files = scan_soundscapes(layout.soundscapes, oracle, spec)
    out = Path(out)
    _prepare_out(out, [f.name for f in files], overwrite, spec.label_set)
    sysm.passes.reset()
    from casdri.policies._base import SoundscapeInputs
    report = ApplyReport(out, None, 0, 0)
    stream = iter_soundscapes(files, jobs=jobs)
    bar = tqdm(total=len(files), desc="apply", unit="sc", disable=not progress,
               file=sys.stderr)
    n_sep, n_st = len(spec.separators), 1 + len(spec.stages)
    try:
        for start in range(0, len(files), tag_batch_size):
            scs = [next(stream) for _ in files[start:start + tag_batch_size]]
            probs = tag_soundscapes(sysm, scs, tag_batch_size)
            for s, p in zip(scs, probs):
                refs = None if s.oracle is None else s.oracle
                inputs = SoundscapeInputs(
                    soundscape=s.name, label_set=spec.label_set,
                    tagger_probs={t: p[t] for t in spec.taggers},
                    ref_labels=None if s.oracle_labels is None else tuple(
                        spec.label_set.index(x) for x in s.oracle_labels),
                    n_separators=n_sep, n_stages=n_st)
                lookup = LiveLookup(sysm, s.name, s.mixture, refs)
                decision = module.decide(inputs, params, lookup)
                written = []
                for stem, keep in zip(decision.stems, decision.keep):
                    if not keep:
                        continue
                    label = spec.label_set.classes[stem.label]
                    path = out / f"{s.name}_{len(written)}_{label}.wav"
                    sf.write(str(path), np.asarray(stem.ref, np.float32), spec.sample_rate_hz,
                             subtype="FLOAT")
                    written.append(label)
                report.decisions[s.name] = written
                report.n_stems += len(written)
                report.n_soundscapes += 1
                bar.update(1)
    finally:
        bar.close()
        stream.close()
    report.passes = dict(sysm.passes.items)
    if zip_name:
        report.zip_path = _write_zip(out, zip_name)
    if oracle is not None:
        from casdri.scoring import score_folders
        report.score = score_folders(layout.soundscapes, oracle, out, label_set=spec.label_set,
                                     jobs=1)
        report.capi_sdri = report.score.capi_sdri
    report.seconds = time.perf_counter() - t0
    return report


def _write_zip(out: Path, zip_name: str) -> Path:
    path = Path(zip_name)
    if len(path.parts) == 1:
        path = out.parent / path
    if path.suffix != ".zip":
        path = path.with_suffix(".zip")
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for f in sorted(out.glob("*.wav")):
            z.write(f, arcname=f.name)
    tmp.replace(path)
    return path
