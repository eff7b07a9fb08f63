"""System YAML → loaded models behind the official DCASE 2026 Task 4 interface.

Conventions:
    * A **tagger** is ``forward({'waveform': (B, ch, T)}) -> {'probabilities': (B, n_tracks,
      C + 1)}`` of **logits**; the builder applies the softmax (in float64), silence is the
      last column (index ``C``). The ``1ch`` tagger gets mixture channel 0 unless its spec
      says ``channels: [...]``; other taggers get all channels.
    * A **separator** is ``forward({'mixture': (B, 4, T), 'label_vector': (B, n_slots·C)})
      -> {'waveform': (B, n_slots, 1, T)}``; the label vector stacks one one-hot per slot,
      an empty (silence) slot is all zeros. ``n_slots`` defaults to ``n_tracks``.
    * A refinement **stage** is ``forward({'mixture': (B, 4, T), 'label_vector': (B,
      n_slots·C), 'stems': (B, n_slots, 1, T)}) -> {'waveform': (B, n_slots, 1, T)}``; stage
      ``s`` refines the output of stage ``s − 1`` (stage 0 is the separator itself), for every
      separator.
    * The **retagger** names one tagger that takes a mono stem as ``(B, 1, T)``; a stage may
      name its own (``retagger:`` in its entry): its stems are re-tagged by that tagger
      (a classifier per stage, as multi-stage systems re-classify at each stage).
    * An optional **SED** model (``sed:``) is ``forward({'waveform': (B, ch, T)}) ->
      {'probabilities': (B, n_frames, C)}`` of frame **probabilities** in ``[0, 1]`` (no
      silence column), ``frame_hop_s`` seconds apart; the builder rounds them to float16 (as
      the cache stores them, `casdri.sed.as_cached`) before anything reads them. It gets all
      mixture channels unless its entry says ``channels``.
    * A separator or stage with ``sed_guided: true`` also gets ``'sed': (B, n_frames, C)``
      float32 (the float16-rounded SED of each item's mixture).
    * A stage with ``iterations: N`` runs N times, each iteration on the previous one's
      stems; every iteration is a cache stage (named ``<name>#<k>``, `SystemSpec.stage_runs`).
    * Paths in the YAML (checkpoints, ``python_path``) are relative to the YAML's folder. The
      YAML folder and ``python_path`` entries are put on ``sys.path`` to import models.
    * Checkpoints load with ``torch.load(weights_only=True)`` unless ``allow_pickle: true``.
      A Lightning ``{'state_dict': ...}`` wrapper and key prefixes (``model.``, ``net.``,
      ``module.``, or any prefix found by suffix match, as the baseline's ``S5._load_ckpt``)
      are removed; the remaining keys must equal the model's keys exactly.

YAML shape::

    label_set: dcase2026t4
    sample_rate_hz: 32000
    n_tracks: 3
    taggers:
      1ch: {module: pkg.models, class: Tagger1ch, args: {...}, checkpoint: weights/t1.pt}
      4ch: {module: pkg.models, class: Tagger4ch, args: {...}, checkpoint: weights/t4.pt}
    separators:
      small: {module: ..., class: ..., args: {...}, checkpoint: ...}
    retagger: 1ch
    stages: [{name: refine1, module: ..., class: ..., args: {...}, checkpoint: ...,
              iterations: 2, sed_guided: true, retagger: 4ch}]
    sed: {name: sed, module: ..., class: ..., args: {...}, checkpoint: ..., frame_hop_s: 0.32}
    allow_pickle: false
"""
from __future__ import annotations

import contextlib
import importlib
import pickle
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from casdri._cli import lazy_import
from casdri._io import sha256_file
from casdri.labels import LabelSet
from casdri.sed import as_cached

from ._spec import (CheckpointError, ModelOutputError, ModelSpec, SystemConfigError,
                    SystemSpec)

__all__ = [
    "SystemConfigError", "CheckpointError", "ModelOutputError",
    "ModelSpec", "SystemSpec", "System", "load_system", "sha256_file", "pick_device",
    "set_threads", "import_torch", "default_batch_size", "distinct_rows",
]

_PREFIXES = ("model.", "net.", "module.")


# ----------------------------------------------------------------------------- loading


def import_torch():
    """``torch``, or `MissingDependencyError` with the install hint (the builder extra)."""
    return lazy_import("torch", extra="builder")


#: `distinct_rows` groups rows by every this-many-th sample before comparing them whole
_PROBE_STRIDE = 61


def distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 2-D array, compared bit for bit (``-0.0 != 0.0``, a NaN equals
    the same NaN): ``(first, inverse)``, ``first`` the ascending index of each distinct row's
    first occurrence and ``inverse[i]`` the position in ``first`` of row ``i``'s; both int64.

    Rows are grouped by a sparse probe (every `_PROBE_STRIDE`-th sample) and compared whole
    only within a group, so a batch of 1.3 MB stems costs a fraction of hashing every byte.
    """
    n = rows.shape[0]
    bits = rows.view(np.dtype(f"u{rows.dtype.itemsize}"))
    groups: dict[bytes, list[int]] = {}
    first: list[int] = []
    inverse = np.empty(n, np.int64)
    for i in range(n):
        members = groups.setdefault(bits[i, ::_PROBE_STRIDE].tobytes(), [])
        hit = next((k for k in members if np.array_equal(bits[first[k]], bits[i])), None)
        if hit is None:
            hit = len(first)
            first.append(i)
            members.append(hit)
        inverse[i] = hit
    return np.asarray(first, np.int64), inverse


def set_threads(threads: Optional[int]) -> None:
    """``torch.set_num_threads(threads)`` unless ``None`` (numba's OpenMP layer may have
    changed the count in this process: set it again before each run)."""
    if threads is not None:
        import_torch().set_num_threads(int(threads))


def pick_device(device: Optional[str] = None):
    """``torch.device``: the one asked for, else CUDA when present, else CPU.

    Raises:
        SystemConfigError: a device name torch does not know (``banana``), or a CUDA device
            that is not there (``cuda:7`` on a machine with fewer GPUs, or none).
    """
    torch = import_torch()
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SystemConfigError(f"--device {device!r}: not a torch device; use cpu, cuda, "
                                "cuda:N or mps") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise SystemConfigError(f"--device {device!r}: this machine has no CUDA device "
                                    "torch can use; use --device cpu")
        if dev.index is not None and dev.index >= n:
            raise SystemConfigError(f"--device {device!r}: this machine has {n} CUDA "
                                    f"device(s), cuda:0..cuda:{n - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise SystemConfigError(f"--device {device!r}: MPS is not available here; use cpu")
    return dev


#: separator items per forward on CPU: 48 built the README demo 2.5x faster than 8 on a
#: 2-core machine (100 s against 254 s, issue 13), with the same numbers
CPU_BATCH_SIZE = 48
#: on CUDA: items per GiB of device memory (the reference separators need < 40 MiB an item
#: at 10 s), clipped to [CPU_BATCH_SIZE, MAX_BATCH_SIZE]
CUDA_ITEMS_PER_GIB, MAX_BATCH_SIZE = 8, 256


def default_batch_size(device) -> int:
    """Separator items per forward for ``device`` when ``--batch-size`` is not given.

    CPU: `CPU_BATCH_SIZE`; CUDA: `CUDA_ITEMS_PER_GIB` per GiB of the device's memory,
    between `CPU_BATCH_SIZE` and `MAX_BATCH_SIZE` (an H100 80 GB gets 256, a 16 GB card
    128). The batch size is recorded in the build manifest: a resume must use the same.
    """
    torch = import_torch()
    dev = device if isinstance(device, torch.device) else pick_device(device)
    if dev.type != "cuda":
        return CPU_BATCH_SIZE
    gib = torch.cuda.get_device_properties(dev).total_memory / 2 ** 30
    return int(min(MAX_BATCH_SIZE, max(CPU_BATCH_SIZE, CUDA_ITEMS_PER_GIB * gib)))


@contextlib.contextmanager
def _on_sys_path(paths: Sequence[Path]):
    added = [str(p) for p in paths if str(p) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)


def _instantiate(spec: ModelSpec, where: str):
    try:
        module = importlib.import_module(spec.module)
    except ImportError as e:
        raise SystemConfigError(f"{where}: {spec.role} {spec.name!r}: cannot import module "
                                f"{spec.module!r} ({e}); add its folder to python_path") from None
    try:
        cls = getattr(module, spec.cls)
    except AttributeError:
        raise SystemConfigError(f"{where}: {spec.role} {spec.name!r}: module {spec.module!r} "
                                f"has no class {spec.cls!r}") from None
    try:
        return cls(**spec.args)
    except TypeError as e:
        raise SystemConfigError(f"{where}: {spec.role} {spec.name!r}: {spec.cls}(**args) "
                                f"failed: {e}") from None


def _strip_prefix(state: Mapping[str, Any], expected: set[str]) -> dict[str, Any]:
    """Sub-dict of ``state`` whose keys best match ``expected`` after removing a prefix."""
    if set(state) == expected:
        return dict(state)
    candidates = {""}
    for p in _PREFIXES:
        candidates |= {p, p * 2}
    candidates |= {a + b for a in _PREFIXES for b in _PREFIXES}
    if expected:
        probe = max(expected, key=len)  # a long key ends few other keys
        for k in state:
            if k.endswith(probe) and len(k) > len(probe):
                candidates.add(k[: -len(probe)])
    best, best_hits = dict(state), len(set(state) & expected)
    for p in sorted(candidates, key=len):
        if not p:
            continue
        sub = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
        hits = len(set(sub) & expected)
        if hits > best_hits:
            best, best_hits = sub, hits
    return best


def _list(keys, n=8) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_state(model, path: Path, allow_pickle: bool, what: str) -> None:
    """Load ``path`` into ``model`` (strict). Raises `CheckpointError` naming the file."""
    torch = import_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except FileNotFoundError:
        raise CheckpointError(f"{what}: checkpoint {path} does not exist") from None
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{what}: {path} cannot be loaded with weights_only=True ({first}); if you trust "
            "this file, set allow_pickle: true in the system YAML") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        raise CheckpointError(f"{what}: cannot read checkpoint {path}: {e}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what}: {path} holds a {type(obj).__name__}, expected a "
                              "state_dict (or {'state_dict': ...})")
    expected = set(model.state_dict())
    state = _strip_prefix(obj, expected)
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: checkpoint {path} does not match class {type(model).__name__}: "
            f"missing keys [{_list(missing)}]; unexpected keys [{_list(unexpected)}]; check "
            "the class and args in the system YAML")
    own = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
           if hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(
            f"{what}: checkpoint {path} does not match class {type(model).__name__}: shape "
            f"mismatch for {'; '.join(bad[:5])}; check the args in the system YAML")
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- system


@dataclass
class PassCounter:
    """Forward passes: items (one soundscape / query / stem each) and batched calls."""

    items: Counter = field(default_factory=Counter)
    calls: Counter = field(default_factory=Counter)

    def add(self, kind: str, n_items: int) -> None:
        self.items[kind] += n_items
        self.calls[kind] += 1

    def reset(self) -> None:
        self.items.clear()
        self.calls.clear()


class System:
    """Loaded models (eval mode, on one device) with interface checks on every call.

    Use `load_system`. Counts forward passes in ``self.passes`` under ``"tagger"``,
    ``"separator"``, ``"stage"``, ``"retag"`` and ``"sed"``.
    """

    def __init__(self, spec: SystemSpec, device=None, amp: bool = False):
        torch = import_torch()
        self.spec = spec
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        self.amp = bool(amp)
        self.passes = PassCounter()
        self.sha256: dict[str, Optional[str]] = {}
        where = str(spec.path) if spec.path else "system"
        self.taggers, self.separators, self.stages = {}, {}, []
        with _on_sys_path([*spec.python_path] + ([spec.path.resolve().parent] if spec.path
                                                 else [])):
            for role, specs, dest in (("tagger", spec.taggers, self.taggers),
                                      ("separator", spec.separators, self.separators)):
                for name, ms in specs.items():
                    dest[name] = self._load(ms, where)
            for ms in spec.stages:
                self.stages.append((ms.name, self._load(ms, where)))
            self.sed = None if spec.sed is None else self._load(spec.sed, where)

    def _load(self, ms: ModelSpec, where: str):
        model = _instantiate(ms, where)
        what = f"{where}: {ms.role} {ms.name!r}"
        if ms.checkpoint is not None:
            if not ms.checkpoint.is_file():
                raise CheckpointError(f"{what}: checkpoint {ms.checkpoint} does not exist")
            load_state(model, ms.checkpoint, self.spec.allow_pickle, what)
            self.sha256[f"{ms.role}/{ms.name}"] = sha256_file(ms.checkpoint)
        else:
            warnings.warn(f"{what}: no checkpoint, so its weights are whatever "
                          f"{type(model).__name__}(...) makes (random, unless the class loads "
                          "its own), and apply cannot check a policy against them; give "
                          "'checkpoint: PATH'", UserWarning, stacklevel=2)
            self.sha256[f"{ms.role}/{ms.name}"] = None
        return model.to(self.device).eval()

    # ------------------------------------------------------------------ description

    @property
    def label_set(self) -> LabelSet:
        return self.spec.label_set

    @property
    def n_classes(self) -> int:
        return self.spec.label_set.n_classes

    def describe(self) -> dict:
        """JSON-ready description of every model (class, args, checkpoint, SHA-256)."""
        s = self.spec

        def d(ms):
            return ms.describe(self.sha256.get(f"{ms.role}/{ms.name}"))
        return {"taggers": {k: d(v) for k, v in s.taggers.items()},
                "separators": {k: d(v) for k, v in s.separators.items()},
                "stages": [d(ms) for ms in s.stages],
                **({"sed": d(s.sed)} if s.sed is not None else {}),
                "retagger": s.retagger, "n_tracks": s.n_tracks,
                "sample_rate_hz": s.sample_rate_hz, "label_set": s.label_set.name,
                "amp": self.amp}

    def stage_names(self) -> list[str]:
        """Cache stage names, ``"sep"`` (stage 0, the separator output) first, then each
        stage iteration (`SystemSpec.stage_runs`)."""
        return ["sep", *(name for name, _ in self.spec.stage_runs())]

    def stage_retagger(self, stage: int) -> str:
        """The tagger that re-tags the stems of cache stage ``stage`` (0: the separator)."""
        if stage == 0:
            return self.spec.retagger
        ms = self.spec.stage_runs()[stage - 1][1]
        return ms.retagger or self.spec.retagger

    # ------------------------------------------------------------------ calls

    def _ctx(self):
        torch = import_torch()
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def _call(self, model, inputs: dict, key: str, shape: tuple, what: str):
        torch = import_torch()
        with torch.inference_mode(), self._ctx():
            out = model(inputs)
        if not isinstance(out, Mapping) or key not in out:
            got = list(out) if isinstance(out, Mapping) else type(out).__name__
            raise ModelOutputError(f"{what}: expected a dict with {key!r}, got {got}")
        y = out[key]
        if not torch.is_tensor(y) or tuple(y.shape) != shape:
            got = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
            raise ModelOutputError(f"{what}: {key!r} has shape {got}, expected {shape}")
        y = y.float()
        if not torch.isfinite(y.sum()) and not torch.isfinite(y).all():
            bad = (~torch.isfinite(y)).reshape(y.shape[0], -1).any(dim=1).nonzero()
            raise ModelOutputError(f"{what}: {key!r} holds NaN/Inf for batch items "
                                   f"{bad.flatten().tolist()}")
        return y

    def tag(self, name: str, waveform, where: str = "") -> np.ndarray:
        """Softmax probabilities of tagger ``name``.

        Args:
            name: tagger name (YAML key).
            waveform: ``(B, ch, T)`` float32 tensor (all mixture channels; the tagger's
                ``channels`` are selected here).
            where: context appended to error messages (soundscape names).

        Returns:
            ``(B, n_tracks, C + 1)`` float64, silence last.
        """
        torch = import_torch()
        ms = self.spec.taggers[name]
        x = waveform if ms.channels is None else waveform[:, list(ms.channels)]
        x = x.to(self.device, non_blocking=True)
        shape = (x.shape[0], self.spec.n_tracks, self.n_classes + 1)
        y = self._call(self.taggers[name], {"waveform": x}, "probabilities", shape,
                       f"tagger {name!r}{where}")
        self.passes.add("tagger", x.shape[0])
        return torch.softmax(y.double(), dim=-1).cpu().numpy()

    def detect(self, waveform, where: str = "") -> np.ndarray:
        """Frame probabilities of the SED model (module conventions).

        Args:
            waveform: ``(B, ch, T)`` float32 tensor (all mixture channels; the SED entry's
                ``channels`` are selected here).
            where: context appended to error messages.

        Returns:
            ``(B, n_frames, C)`` float16, as the cache stores them.

        Raises:
            SystemConfigError: the system has no SED model. ModelOutputError: a wrong key,
                shape, or values outside [0, 1].
        """
        torch = import_torch()
        if self.sed is None:
            raise SystemConfigError("the system has no SED model (add 'sed:' to its YAML)")
        ms = self.spec.sed
        x = waveform if ms.channels is None else waveform[:, list(ms.channels)]
        x = x.to(self.device, non_blocking=True)
        what = f"sed {ms.name!r}{where}"
        with torch.inference_mode(), self._ctx():
            out = self.sed({"waveform": x})
        y = out.get("probabilities") if isinstance(out, Mapping) else None
        if not torch.is_tensor(y) or y.ndim != 3 or y.shape[0] != x.shape[0] or \
                y.shape[2] != self.n_classes:
            got = tuple(y.shape) if torch.is_tensor(y) else type(out).__name__
            raise ModelOutputError(f"{what}: expected {{'probabilities': (B, n_frames, "
                                   f"{self.n_classes})}}, got {got}")
        y = y.float().cpu().numpy()
        if not (np.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()):
            raise ModelOutputError(f"{what}: 'probabilities' must be frame probabilities in "
                                   "[0, 1] (apply the sigmoid in the model)")
        self.passes.add("sed", x.shape[0])
        return as_cached(y)

    def retag(self, stems, where: str = "", tagger: Optional[str] = None) -> np.ndarray:
        """Retagger softmax of mono stems ``(N, 1, T)`` → ``(N, n_tracks, C + 1)`` float64
        (``tagger``: another tagger than the system's retagger, a stage's own).

        Bit-identical stems (a separator whose slots depend only on their own class gives the
        same stem to every query holding that class) are re-tagged once; the passes count
        the forwards actually run.
        """
        torch = import_torch()
        name = tagger or self.spec.retagger
        unique, inverse = distinct_rows(stems.detach().float().cpu().reshape(len(stems), -1)
                                        .contiguous().numpy())
        x = stems[torch.from_numpy(unique)].to(self.device)
        shape = (x.shape[0], self.spec.n_tracks, self.n_classes + 1)
        y = self._call(self.taggers[name], {"waveform": x}, "probabilities", shape,
                       f"retagger {name!r}{where}")
        self.passes.add("retag", x.shape[0])
        return torch.softmax(y.double(), dim=-1).cpu().numpy()[inverse]

    def label_vector(self, queries: Sequence[Sequence[int]], n_slots: int):
        """``(B, n_slots·C)`` float32 stacked one-hots; slots past the query are zeros."""
        torch = import_torch()
        c = self.n_classes
        lv = torch.zeros(len(queries), n_slots * c, dtype=torch.float32)
        for b, q in enumerate(queries):
            if len(q) > n_slots:
                raise ValueError(f"query {tuple(q)} has more classes than {n_slots} slots")
            for i, k in enumerate(q):
                lv[b, i * c + int(k)] = 1.0
        return lv

    def separate(self, name: str, mixture, queries: Sequence[Sequence[int]],
                 where: str = "", sed=None) -> list:
        """Separator ``name`` then every stage iteration, on a batch of (mixture, query) items.

        Args:
            name: separator name (YAML key).
            mixture: ``(B, n_channels, T)`` float32 tensor.
            queries: ``B`` canonical queries (sorted class indices).
            where: context appended to error messages (soundscape names).
            sed: ``(B, n_frames, C)`` float32 tensor of the items' SED (needed when a
                separator or stage is ``sed_guided``).

        Returns:
            One ``(B, n_slots, 1, T)`` float32 tensor on the device per cache stage (``sep``
            first, then each stage iteration).
        """
        ms = self.spec.separators[name]
        n_slots = self.spec.n_slots(ms)
        mix = mixture.to(self.device, non_blocking=True)
        lv = self.label_vector(queries, n_slots).to(self.device)
        shape = (mix.shape[0], n_slots, 1, mix.shape[-1])

        def inputs(spec, **kw):
            d = {"mixture": mix, "label_vector": lv, **kw}
            if spec.sed_guided:
                if sed is None:
                    raise SystemConfigError(f"{spec.role} {spec.name!r} is sed_guided: pass "
                                            "the items' SED (sed=...)")
                d["sed"] = sed.to(self.device)
            return d
        out = [self._call(self.separators[name], inputs(ms), "waveform", shape,
                          f"separator {name!r}{where}")]
        self.passes.add("separator", mix.shape[0])
        models = dict(self.stages)
        for sname, sms in self.spec.stage_runs():
            if self.spec.n_slots(sms) != n_slots:
                raise SystemConfigError(f"stage {sname!r} has {self.spec.n_slots(sms)} slots, "
                                        f"separator {name!r} has {n_slots}")
            out.append(self._call(models[sms.name], inputs(sms, stems=out[-1]), "waveform",
                                  shape, f"stage {sname!r} after separator {name!r}{where}"))
            self.passes.add("stage", mix.shape[0])
        return out


def load_system(path_or_spec: Union[str, Path, SystemSpec], device=None,
                amp: bool = False) -> System:
    """Parse a system YAML (or take a `SystemSpec`) and load every model.

    Args:
        path_or_spec: the YAML path or a parsed spec.
        device: ``"cuda:0"``, ``"cpu"``...; default CUDA when present.
        amp: mixed precision (changes the numbers; recorded in cache metadata).

    Raises:
        SystemConfigError: bad YAML, unknown module or class, bad constructor args.
        CheckpointError: unreadable checkpoint, or keys/shapes that do not match the class.
    """
    spec = path_or_spec if isinstance(path_or_spec, SystemSpec) else \
        SystemSpec.from_yaml(path_or_spec)
    return System(spec, device=device, amp=amp)
