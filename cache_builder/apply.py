"""Live apply: run a policy with the real models on a folder and write the submission stems.

Conventions:
    * The policy's plain-Python ``decide(inputs, params, lookup)`` (`casdri.policies`) runs
      per soundscape; ``lookup(query, separator, stage)`` separates the **canonical** query
      (sorted ascending, as the cache) on demand and memoises it, so only what the policy asks
      for is separated, each (query, separator) once (all stages come from that one pass).
    * The values ``decide`` sees are the cache's: tagger and retagger softmax rounded to
      float32, ``energy_db`` from float64 sums over the float32 stem, separators and stages
      (each iteration a stage) in system-YAML order, and the SED activity summary
      (`casdri.sed.activity_summary`) of the float16-rounded SED frame probabilities. The
      same policy therefore decides the same on the cache and live.
    * Output: ``<soundscape>_<i>_<Label>.wav`` for each kept slot, ``i`` counting the kept
      stems of that soundscape from 0 in slot order; mono float32 WAV (subtype FLOAT) at the
      system rate. Silence slots are not written. The zip holds the stems at its root.
    * **The policy is checked before any work**, as the search checks it
      (`casdri.policies.load_policy_yaml` with the system's label set), and its
      ``provenance`` is compared with the system: the checkpoint SHA-256 of every model the
      policy was tuned with (``provenance.models``, ``{"<role>/<name>": sha256}``; or, for an
      older policy, the metadata of the cache named by ``provenance.cache_path`` when its
      ``cache_id`` matches) must equal this system's; a difference is refused (`PolicyError`)
      unless ``force``, which warns. A policy without provenance (hand-written) warns that
      nothing could be compared.
    * **Nothing half-written looks finished**: stems go to a temp folder and are moved into
      ``out`` at the end; the zip, checked first, holds exactly this run's stems
      (`cache_builder._submission`).
"""
from __future__ import annotations

import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile as sf
import yaml
from tqdm.auto import tqdm

from casdri import schema as S
from casdri._io import sha256_file
from casdri.errors import PolicyError
from casdri.layout import stem_name
from casdri.policies import SlotStem, SoundscapeInputs, load_policy_yaml
from casdri.scoring import score_folders
from casdri.sed import activity_summary

from ._submission import (INCOMPLETE_MARKER, check_out, move_in, temp_folder, write_zip,
                          zip_target)
from .runner import (iter_soundscapes, resolve_folder, scan_soundscapes, sed_soundscapes,
                     separate_items, tag_soundscapes)
from .system import System, SystemSpec, load_system, set_threads

__all__ = ["apply_policy", "ApplyReport", "load_policy", "LiveLookup", "check_provenance",
           "model_sha256", "system_meta", "zip_target", "INCOMPLETE_MARKER"]


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
    (`casdri.policies.load_policy_yaml`, with the file named in errors): the same validation
    as the search (unknown keys, NaN, out-of-range values and unknown choices refused). With
    a `SystemSpec` for ``label_set``, the parameters are also encoded against the system
    (`system_meta`), as the replay encodes them against a cache: a separator or stage
    choice the system cannot serve is refused.

    Raises:
        PolicyError: unreadable file, no ``policy`` key, an unknown policy, bad parameters.
    """
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy YAML {path} does not exist")
    space = label_set if isinstance(label_set, SystemSpec) else None
    if space is not None:
        label_set = space.label_set
    try:
        module, params = load_policy_yaml(path, label_set)
        if space is not None:  # the choices the system serves, as the replay encodes them
            params.encode(system_meta(space))
        return module, params
    except PolicyError as e:  # the file is named once (a parse error names it already)
        raise PolicyError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise PolicyError(f"{path}: not valid YAML ({e})") from None


def system_meta(spec: SystemSpec):
    """The `casdri.schema.CacheMeta` a cache of this system would have (no hashes): what a
    policy's choices (separators, stages) are checked against."""
    return S.CacheMeta(
        label_set=spec.label_set.name, classes=spec.label_set.classes,
        sample_rate_hz=spec.sample_rate_hz, n_tracks=spec.n_tracks,
        taggers=tuple(spec.taggers), separators=tuple(spec.separators),
        separator_sha256=("",) * len(spec.separators), retagger=spec.retagger,
        n_stages=spec.n_stages)


def _provenance(path: Path) -> Optional[dict]:
    doc = yaml.safe_load(Path(path).read_text())
    prov = doc.get("provenance") if isinstance(doc, dict) else None
    return prov if isinstance(prov, dict) else None


def model_sha256(spec: SystemSpec) -> dict[str, Optional[str]]:
    """``{"<role>/<name>": checkpoint sha256 or None}`` of every model of a system, read
    from the checkpoint files (no model is loaded; the keys of `System.sha256`)."""
    models = [*spec.taggers.values(), *spec.separators.values(), *spec.stages,
              *([spec.sed] if spec.sed is not None else [])]
    return {f"{m.role}/{m.name}": None if m.checkpoint is None or not m.checkpoint.is_file()
            else sha256_file(m.checkpoint) for m in models}


def _cache_models(prov: dict) -> Optional[dict]:
    """Model hashes of the cache a policy was tuned on, from its metadata (older policies)."""
    path = prov.get("cache_path")
    meta_file = Path(path) / S.META_FILE if path else None
    if meta_file is None or not meta_file.is_file():
        return None
    try:
        meta = S.CacheMeta.from_json(meta_file.read_text(), where=str(meta_file))
    except (OSError, ValueError):
        return None
    if prov.get("cache_id") and meta.cache_id != prov.get("cache_id"):
        return None
    return meta.model_sha256()


def check_provenance(policy_path: Union[str, Path], prov: Optional[dict],
                     have: dict[str, Optional[str]], force: bool = False) -> list[str]:
    """Compare the models a policy was tuned with (its ``provenance``) with a system's.

    Args:
        policy_path: for messages.
        prov: the policy YAML's ``provenance`` mapping, or ``None``.
        have: `model_sha256` of the system.
        force: warn instead of raising on a difference.

    Returns:
        The differences (empty when the models match).

    Raises:
        PolicyError: a model the policy was tuned with differs or is missing (unless
            ``force``).

    Warns:
        UserWarning: no model provenance to compare; or, with ``force``, each difference.
    """
    want = None
    if prov is not None:
        want = prov.get("models") if isinstance(prov.get("models"), dict) else None
        if want is None:
            want = _cache_models(prov)
    if not want:
        warnings.warn(f"{policy_path}: no model provenance (provenance.models or a readable "
                      "provenance.cache_path); cannot check that the policy was tuned with "
                      "this system's checkpoints", UserWarning, stacklevel=3)
        return []
    diffs = []
    for key, sha in sorted(want.items()):
        if key not in have:
            diffs.append(f"{key}: in the policy's provenance, not in the system")
        elif sha and have[key] and sha != have[key]:
            diffs.append(f"{key}: tuned with checkpoint sha256 {sha[:12]}..., the system has "
                         f"{have[key][:12]}...")
    if diffs and not force:
        raise PolicyError(
            f"{policy_path}: the policy was tuned with other models than the system ("
            f"{'; '.join(diffs)}); use the system the cache was built with, search again on "
            "a cache of this system, or pass --force (force=True in Python) to apply it anyway")
    for d in diffs:
        warnings.warn(f"{policy_path}: APPLYING A POLICY TUNED ON OTHER MODELS (--force): {d}",
                      UserWarning, stacklevel=3)
    return diffs


class LiveLookup:
    """``lookup(query, separator, stage) -> [SlotStem]`` backed by the real models.

    One instance per soundscape; ``n_separations`` counts (query, separator) forwards.
    """

    def __init__(self, system: System, name: str, mixture: np.ndarray,
                 refs: Optional[np.ndarray], sed: Optional[np.ndarray] = None):
        self.system, self.name, self.mixture, self.refs = system, name, mixture, refs
        self.sed = sed
        self.separators = list(system.spec.separators)
        self.memo: dict = {}

    def __call__(self, query, separator: int, stage: int):
        q = tuple(sorted(int(x) for x in query))
        if not q:
            return []
        if not 0 <= separator < len(self.separators):
            raise PolicyError(f"separator index {separator}: the system has "
                              f"{self.separators}")
        n_st = self.system.spec.n_stages
        if not 0 <= stage < n_st:
            raise PolicyError(f"stage {stage}: the system has {n_st} stages (0 = separator "
                              "output)")
        key = (q, separator)
        if key not in self.memo:
            self.memo[key] = separate_items(
                self.system, self.separators[separator], [self.mixture], [q], [self.refs],
                keep_waveforms=True, where=f" on {self.name}",
                seds=None if self.sed is None else [self.sed])[0]
        info = self.memo[key][stage]
        return [SlotStem.from_retag(q[i], float(info.energy_db[i]), info.retag[i],
                                    ref=info.waveforms[i]) for i in range(len(q))]

    @property
    def n_separations(self) -> int:
        return len(self.memo)


def apply_policy(system: Union[str, Path, System], policy: Union[str, Path],
                 soundscapes: Union[str, Path], out: Union[str, Path], *,
                 zip_name: Optional[str] = None, oracle: Union[str, Path, None, bool] = None,
                 device: Optional[str] = None, tag_batch_size: int = 1, jobs: int = 0,
                 amp: bool = False, overwrite: bool = False, threads: Optional[int] = None,
                 progress: bool = False, force: bool = False) -> ApplyReport:
    """Run ``policy`` live on every soundscape of a folder and write its stems (and zip).

    Args:
        system: system YAML or loaded `System`.
        policy: policy YAML (``{policy: refine, label_set: ..., params: {...}}``, with the
            ``provenance`` block the search writes).
        soundscapes: folder of ``<name>.wav``, or a split folder (``soundscape/`` and maybe
            ``oracle_target/``; `cache_builder.runner.resolve_folder`).
        out: stem folder (created; must be empty unless ``overwrite``).
        zip_name: also write a submission zip of this run's stems; a bare name goes next to
            ``out``; it must end in ``.zip`` or have no suffix (``.zip`` is added).
        oracle: oracle folder: also score the written stems (`casdri.scoring.score_folders`)
            and give the oracle labels to the ``oracle`` policy. ``None``: a split folder's
            ``oracle_target/`` if any; ``False``: none.
        device, amp: as in `cache_builder.build.build_cache`.
        tag_batch_size: soundscapes per tagger forward (1, as `build_cache`'s default, gives
            the cache's tagger values bit for bit).
        jobs: DataLoader workers reading audio.
        overwrite: allow a non-empty ``out`` (stems of these soundscapes are replaced, other
            files are kept and never zipped) and replace an existing zip.
        threads: ``torch.set_num_threads`` for this run; ``None`` keeps torch's.
        progress: tqdm bar on stderr.
        force: apply a policy whose provenance names other checkpoints (warns).

    Returns:
        `ApplyReport`.

    Raises:
        PolicyError: bad policy YAML, or a policy tuned with other models (unless ``force``);
        CacheError: ``out`` not empty, a bad ``zip_name``; model, audio and folder errors as
            in `build_cache`.
    """
    t0 = time.perf_counter()
    out = Path(out)
    zip_path = None if zip_name is None else zip_target(out, zip_name, overwrite)
    check_out(out, overwrite)
    spec = system.spec if isinstance(system, System) else SystemSpec.from_yaml(system)
    module, params = load_policy(policy, spec)
    have = dict(system.sha256) if isinstance(system, System) else model_sha256(spec)
    check_provenance(policy, _provenance(policy), have, force)
    layout = resolve_folder(soundscapes, oracle)
    oracle = layout.oracle
    if module.NAME == "oracle" and oracle is None:  # it decides from the oracle labels only
        raise PolicyError(f"{policy}: the oracle policy picks the stems of the oracle labels; "
                          "give --oracle (the folder of oracle targets), or apply a tuned "
                          "policy (it wrote no stem for every soundscape without them)")
    set_threads(threads)
    sysm = system if isinstance(system, System) else load_system(spec, device, amp)
    files = scan_soundscapes(layout.soundscapes, oracle, spec)
    sysm.passes.reset()
    report = ApplyReport(out, None, 0, 0)
    tmp = temp_folder(out)
    written_files: list[str] = []
    stream = iter_soundscapes(files, jobs=jobs)
    bar = tqdm(total=len(files), desc="apply", unit="sc", disable=not progress,
               file=sys.stderr)
    n_sep, n_st = len(spec.separators), spec.n_stages
    try:
        for start in range(0, len(files), tag_batch_size):
            scs = [next(stream) for _ in files[start:start + tag_batch_size]]
            probs = tag_soundscapes(sysm, scs, tag_batch_size)
            seds = sed_soundscapes(sysm, scs, tag_batch_size) or [None] * len(scs)
            for s, p, sed in zip(scs, probs, seds):
                refs = None if s.oracle is None else s.oracle
                inputs = SoundscapeInputs(
                    soundscape=s.name, label_set=spec.label_set,
                    tagger_probs={t: p[t] for t in spec.taggers},
                    ref_labels=None if s.oracle_labels is None else tuple(
                        spec.label_set.index(x) for x in s.oracle_labels),
                    n_separators=n_sep, n_stages=n_st,
                    sed_summary=None if sed is None else activity_summary(
                        sed, spec.sed.frame_hop_s))
                lookup = LiveLookup(sysm, s.name, s.mixture, refs, sed)
                decision = module.decide(inputs, params, lookup)
                written = []
                for stem, keep in zip(decision.stems, decision.keep):
                    if not keep:
                        continue
                    label = spec.label_set.classes[stem.label]
                    name = stem_name(s.name, len(written), label)
                    sf.write(str(tmp / name), np.asarray(stem.ref, np.float32),
                             spec.sample_rate_hz, subtype="FLOAT")
                    written.append(label)
                    written_files.append(name)
                report.decisions[s.name] = written
                report.n_stems += len(written)
                report.n_soundscapes += 1
                bar.update(1)
        bar.close()
        stream.close()
        if oracle is not None:
            report.score = score_folders(layout.soundscapes, oracle, tmp,
                                         label_set=spec.label_set, jobs=1)
            report.capi_sdri = report.score.capi_sdri
        move_in(tmp, out, [f.name for f in files], spec.label_set)
    finally:
        bar.close()
        stream.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report.passes = dict(sysm.passes.items)
    if zip_path is not None:
        report.zip_path = write_zip(out, written_files, zip_path)
    report.seconds = time.perf_counter() - t0
    return report
