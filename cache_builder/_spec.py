"""System YAML parsing: `SystemSpec` and `ModelSpec` (nothing imported or loaded here).

See `cache_builder.system` for the YAML shape and the model interface.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import yaml

from casdri.errors import CasdriError
from casdri.labels import LabelSet, get_label_set, sample_rate_problem

__all__ = ["SystemConfigError", "CheckpointError", "ModelOutputError", "ModelSpec",
           "SystemSpec"]

_MODEL_KEYS = {"module", "class", "args", "checkpoint", "channels", "n_slots", "name",
               "frame_hop_s", "sed_guided", "iterations", "retagger"}
#: keys only some roles take
_ROLE_KEYS = {"frame_hop_s": ("sed",), "sed_guided": ("separator", "stage"),
              "iterations": ("stage",), "retagger": ("stage",)}
_TOP_KEYS = {"label_set", "sample_rate_hz", "n_tracks", "n_channels", "taggers", "separators",
             "retagger", "stages", "allow_pickle", "python_path", "sed"}


class SystemConfigError(CasdriError, ValueError):
    """A system YAML that cannot be turned into models."""


class CheckpointError(CasdriError, ValueError):
    """A checkpoint that cannot be read or does not match its model class."""


class ModelOutputError(CasdriError, ValueError):
    """A model whose output breaks the interface (key, shape, dtype, NaN/Inf)."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of a system.

    Attributes:
        role: ``"tagger"``, ``"separator"``, ``"stage"`` or ``"sed"``.
        name: key in the YAML (``"1ch"``, ``"small"``, a stage name, the SED model's name).
        module, cls: import path and class name.
        args: constructor keyword arguments.
        checkpoint: absolute checkpoint path, or ``None`` (the constructor loads weights).
        channels: mixture channels fed to a tagger (``None`` = all).
        n_slots: separator/stage output slots.
        frame_hop_s: seconds between the SED model's frames (``sed`` only).
        sed_guided: the separator or stage also gets the SED frame probabilities
            (``'sed'``: ``(B, n_frames, C)``).
        iterations: a stage run this many times, each on the previous iteration's stems,
            every iteration a cache stage of its own (``stage`` only).
        retagger: the tagger that re-tags this stage's stems (``stage`` only; None: the
            system's retagger).
    """

    role: str
    name: str
    module: str
    cls: str
    args: Mapping[str, Any]
    checkpoint: Optional[Path]
    channels: Optional[tuple[int, ...]] = None
    n_slots: Optional[int] = None
    frame_hop_s: Optional[float] = None
    sed_guided: bool = False
    iterations: int = 1
    retagger: Optional[str] = None

    def describe(self, sha256: Optional[str]) -> dict:
        """JSON-ready description recorded in cache metadata (the SED, iteration and
        per-stage retagger keys only when set, so the metadata of systems without them, and
        so their caches' identity, stay as they were)."""
        d = {"name": self.name, "module": self.module, "class": self.cls,
             "args": _jsonable(self.args),
             "checkpoint": None if self.checkpoint is None else self.checkpoint.name,
             "sha256": sha256,
             "channels": None if self.channels is None else list(self.channels),
             "n_slots": self.n_slots}
        for key, off in (("frame_hop_s", None), ("sed_guided", False), ("iterations", 1),
                         ("retagger", None)):
            if getattr(self, key) != off:
                d[key] = getattr(self, key)
        return d


def _jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


@dataclass(frozen=True)
class SystemSpec:
    """A parsed system YAML (nothing imported or loaded yet).

    Attributes:
        path: the YAML file (``None`` when built from a dict).
        label_set: class list; C = ``label_set.n_classes``.
        sample_rate_hz: expected soundscape rate.
        n_tracks: tagger tracks K (also the largest query size).
        n_channels: soundscape channels (4).
        taggers, separators: name → `ModelSpec`, in YAML order.
        retagger: name of the tagger used on stems.
        stages: refinement stages in order (a stage with ``iterations: N`` is N cache
            stages, `stage_runs`).
        sed: the frame-level SED model, or None.
        allow_pickle: load checkpoints as full pickles (the explicit YAML opt-in; default
            ``weights_only`` loading).
        python_path: folders put on ``sys.path`` before importing models.
    """

    path: Optional[Path]
    label_set: LabelSet
    sample_rate_hz: int
    n_tracks: int
    n_channels: int
    taggers: Mapping[str, ModelSpec]
    separators: Mapping[str, ModelSpec]
    retagger: str
    stages: tuple[ModelSpec, ...] = ()
    allow_pickle: bool = False
    python_path: tuple[Path, ...] = ()
    sed: Optional[ModelSpec] = None

    def stage_runs(self) -> list[tuple[str, ModelSpec]]:
        """``[(cache stage name, stage spec)]`` of cache stages 1, 2, ...: each stage once per
        iteration (``<name>`` for one iteration, ``<name>#<k>`` for iteration k of several)."""
        return [(s.name if s.iterations == 1 else f"{s.name}#{k}", s)
                for s in self.stages for k in range(1, s.iterations + 1)]

    @property
    def n_stages(self) -> int:
        """Cache stages: the separator output, then every stage iteration."""
        return 1 + len(self.stage_runs())

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "SystemSpec":
        """Parse a system YAML. Raises `SystemConfigError` naming the file and key."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as e:
            raise SystemConfigError(f"{path}: cannot read the system YAML ({e})") from None
        except yaml.YAMLError as e:
            raise SystemConfigError(f"{path}: not valid YAML ({e})") from None
        return cls.from_dict(data, path.resolve().parent, path)

    @classmethod
    def from_dict(cls, data: Any, base_dir: Union[str, Path],
                  path: Optional[Path] = None) -> "SystemSpec":
        """Parse the YAML mapping; relative paths resolve against ``base_dir``."""
        where = str(path) if path else "system"
        base_dir = Path(base_dir)
        if not isinstance(data, Mapping):
            raise SystemConfigError(f"{where}: expected a mapping at the top level")
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise SystemConfigError(f"{where}: unknown keys {sorted(unknown)}; known: "
                                    f"{sorted(_TOP_KEYS)}")
        for key in ("taggers", "separators", "retagger"):
            if key not in data:
                raise SystemConfigError(f"{where}: missing key {key!r}")
        try:
            label_set = get_label_set(data.get("label_set", "dcase2026t4"))
        except CasdriError as e:
            raise SystemConfigError(f"{where}: label_set: {e}") from None
        n_tracks = _pos_int(data.get("n_tracks", 3), f"{where}: n_tracks")
        n_channels = _pos_int(data.get("n_channels", 4), f"{where}: n_channels")

        def models(role, block) -> dict[str, ModelSpec]:
            if not isinstance(block, Mapping) or not block:
                raise SystemConfigError(f"{where}: {role}s must be a non-empty mapping "
                                        "name -> {module, class, args, checkpoint}")
            return {str(k): _model_spec(role, str(k), v, base_dir, where)
                    for k, v in block.items()}

        taggers = models("tagger", data["taggers"])
        separators = models("separator", data["separators"])
        stages_raw = data.get("stages") or []
        if not isinstance(stages_raw, Sequence) or isinstance(stages_raw, str):
            raise SystemConfigError(f"{where}: stages must be a list")
        stages = tuple(_model_spec("stage", str(s.get("name", f"stage{i + 1}"))
                                   if isinstance(s, Mapping) else f"stage{i + 1}",
                                   s, base_dir, where) for i, s in enumerate(stages_raw))
        if len({s.name for s in stages}) != len(stages):
            raise SystemConfigError(f"{where}: stage names repeat: {[s.name for s in stages]}")
        sed = None
        if data.get("sed") is not None:
            block = data["sed"]
            sed = _model_spec("sed", str(block.get("name", "sed")) if isinstance(block, Mapping)
                              else "sed", block, base_dir, where)
            if sed.frame_hop_s is None:
                raise SystemConfigError(f"{where}: sed {sed.name!r}: missing 'frame_hop_s' "
                                        "(seconds between its frames)")
        for m in [*separators.values(), *stages]:
            if m.sed_guided and sed is None:
                raise SystemConfigError(f"{where}: {m.role} {m.name!r} is sed_guided but the "
                                        "system has no 'sed' model")
        for m in stages:
            if m.retagger is not None and m.retagger not in taggers:
                raise SystemConfigError(f"{where}: stage {m.name!r}: retagger {m.retagger!r} "
                                        f"is not one of the taggers {list(taggers)}")
            ch = None if m.retagger is None else taggers[m.retagger].channels
            if ch is not None and len(ch) != 1:
                raise SystemConfigError(f"{where}: stage {m.name!r}: retagger {m.retagger!r} "
                                        f"is fed mono stems (B, 1, T) but its spec says "
                                        f"channels {list(ch)}")
        retagger = str(data["retagger"])
        if retagger not in taggers:
            raise SystemConfigError(f"{where}: retagger {retagger!r} is not one of the taggers "
                                    f"{list(taggers)}")
        rt = taggers[retagger]
        if rt.channels is not None and len(rt.channels) != 1:
            raise SystemConfigError(f"{where}: retagger {retagger!r} is fed mono stems "
                                    f"(B, 1, T) but its spec says channels {list(rt.channels)}")
        taggers = {k: _default_channels(v) for k, v in taggers.items()}
        for s in [*separators.values(), *stages]:
            if s.n_slots is not None and s.n_slots < n_tracks:
                raise SystemConfigError(f"{where}: {s.role} {s.name!r} has n_slots {s.n_slots} "
                                        f"< n_tracks {n_tracks}")
        allow_pickle = data.get("allow_pickle", False)
        if not isinstance(allow_pickle, bool):
            raise SystemConfigError(f"{where}: allow_pickle must be true or false")
        pp = data.get("python_path") or []
        if isinstance(pp, str):
            pp = [pp]
        rate = _pos_int(data.get("sample_rate_hz", 32000), f"{where}: sample_rate_hz")
        problem = sample_rate_problem(label_set.name, rate)
        if problem:  # the cache it builds would be refused at load
            raise SystemConfigError(f"{where}: {problem}; the models must take 32 kHz "
                                    "audio (or name a label set of your own)")
        return cls(path=path, label_set=label_set, sample_rate_hz=rate,
                   n_tracks=n_tracks, n_channels=n_channels, taggers=taggers,
                   separators=separators, retagger=retagger, stages=stages,
                   allow_pickle=allow_pickle,
                   python_path=tuple((base_dir / p).resolve() for p in pp), sed=sed)

    def n_slots(self, spec: ModelSpec) -> int:
        return spec.n_slots or self.n_tracks


def _pos_int(x, where) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise SystemConfigError(f"{where}: expected a positive integer, got {x!r}")
    return x


def _default_channels(spec: ModelSpec) -> ModelSpec:
    if spec.channels is None and spec.name == "1ch":
        return replace(spec, channels=(0,))
    return spec


def _model_spec(role, name, block, base_dir: Path, where) -> ModelSpec:
    here = f"{where}: {role} {name!r}"
    if not isinstance(block, Mapping):
        raise SystemConfigError(f"{here}: expected a mapping with module, class, args, "
                                "checkpoint")
    unknown = set(block) - _MODEL_KEYS
    if unknown:
        raise SystemConfigError(f"{here}: unknown keys {sorted(unknown)}; known: "
                                f"{sorted(_MODEL_KEYS)}")
    for key in ("module", "class"):
        if not block.get(key):
            raise SystemConfigError(f"{here}: missing {key!r}")
    args = block.get("args") or {}
    if not isinstance(args, Mapping):
        raise SystemConfigError(f"{here}: args must be a mapping of constructor arguments")
    ckpt = block.get("checkpoint")
    ckpt = None if ckpt in (None, "") else (base_dir / str(ckpt)).resolve()
    channels = block.get("channels")
    if channels is not None:
        if isinstance(channels, int):
            channels = list(range(channels))
        channels = tuple(int(c) for c in channels)
    n_slots = block.get("n_slots")
    if n_slots is not None:
        n_slots = _pos_int(n_slots, f"{here}: n_slots")
    for key, roles in _ROLE_KEYS.items():
        if key in block and role not in roles:
            raise SystemConfigError(f"{here}: {key!r} is for {' and '.join(roles)} entries only")
    hop = block.get("frame_hop_s")
    if hop is not None and (isinstance(hop, bool) or not isinstance(hop, (int, float))
                            or not 0 < float(hop) < float("inf")):
        raise SystemConfigError(f"{here}: frame_hop_s must be a positive number of seconds, "
                                f"got {hop!r}")
    guided = block.get("sed_guided", False)
    if not isinstance(guided, bool):
        raise SystemConfigError(f"{here}: sed_guided must be true or false")
    iterations = _pos_int(block.get("iterations", 1), f"{here}: iterations")
    retagger = block.get("retagger")
    return ModelSpec(role, name, str(block["module"]), str(block["class"]), dict(args), ckpt,
                     channels, n_slots, None if hop is None else float(hop), guided, iterations,
                     None if retagger is None else str(retagger))
