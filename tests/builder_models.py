"""Tiny random-weight models that follow the DCASE 2026 Task 4 interface, and the fixtures the
cache_builder tests share: a system YAML with checkpoints, and soundscape folders mixed from
the real recordings in ``tests/data/golden/cases`` (46-48).

Interface (see `cache_builder.system`): tagger ``{'waveform': (B, ch, T)} ->
{'probabilities': (B, n_tracks, C+1)}`` logits; separator ``{'mixture': (B, 4, T),
'label_vector': (B, n_slots·C)} -> {'waveform': (B, n_slots, 1, T)}``; stage adds ``'stems'``;
SED ``{'waveform': (B, ch, T)} -> {'probabilities': (B, n_frames, C)}`` frame probabilities;
an SED-guided separator or stage also takes ``'sed': (B, n_frames, C)``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml
from torch import nn

CASES = Path(__file__).parent / "data" / "golden" / "cases"
RATE = 32000


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread for the module (import it into a test module to use it): tiny models
    only gain contention from threads on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TinyTagger(nn.Module):
    """Strided conv → mean/std pooling → linear head; ~20 k parameters."""

    def __init__(self, in_channels: int = 1, n_classes: int = 18, n_tracks: int = 3,
                 hidden: int = 16, hop: int = 512):
        super().__init__()
        self.n_tracks, self.n_out = n_tracks, n_classes + 1
        self.conv = nn.Conv1d(in_channels, hidden, kernel_size=2 * hop, stride=hop)
        self.head = nn.Linear(2 * hidden, n_tracks * (n_classes + 1))

    def forward(self, batch: dict) -> dict:
        x = batch["waveform"]
        h = torch.log1p(torch.relu(self.conv(x)) * 30.0)
        z = torch.cat([h.mean(-1), h.std(-1)], dim=-1)
        logits = 12.0 * self.head(z)
        return {"probabilities": logits.view(x.shape[0], self.n_tracks, self.n_out)}


class TinySeparator(nn.Module):
    """Label-conditioned masks on mixture channel 0 at 1/16 time resolution."""

    def __init__(self, in_channels: int = 4, n_classes: int = 18, n_slots: int = 3,
                 hidden: int = 8):
        super().__init__()
        self.n_classes, self.n_slots = n_classes, n_slots
        self.enc = nn.Conv1d(in_channels, hidden, kernel_size=32, stride=16, padding=8)
        self.emb = nn.Linear(n_classes, hidden)
        self.out = nn.Conv1d(hidden, 1, kernel_size=3, padding=1)

    def forward(self, batch: dict) -> dict:
        mix, lv = batch["mixture"], batch["label_vector"]
        b, _, t = mix.shape
        h = torch.relu(self.enc(mix))  # (B, H, T')
        e = self.emb(lv.view(b, self.n_slots, self.n_classes))  # (B, S, H)
        z = h[:, None] * e[..., None]  # (B, S, H, T')
        m = torch.sigmoid(self.out(z.reshape(b * self.n_slots, *h.shape[1:])))
        m = F.interpolate(m, size=t, mode="linear", align_corners=False)
        return {"waveform": (m.view(b, self.n_slots, 1, t) * mix[:, None, :1])}


class TinyStage(nn.Module):
    """Refinement stage: a gain per slot from its label, plus a little of mixture channel 0."""

    def __init__(self, n_classes: int = 18, n_slots: int = 3):
        super().__init__()
        self.n_classes, self.n_slots = n_classes, n_slots
        self.gain = nn.Linear(n_classes, 1)
        self.mix_gain = nn.Parameter(torch.tensor(0.05))

    def forward(self, batch: dict) -> dict:
        stems, lv = batch["stems"], batch["label_vector"]
        b, s, _, t = stems.shape
        g = torch.sigmoid(self.gain(lv.view(b, s, self.n_classes)))[..., None]  # (B,S,1,1)
        return {"waveform": g * stems + self.mix_gain * batch["mixture"][:, None, :1]}


class TinySED(nn.Module):
    """Frame-level SED: strided conv on the mixture → sigmoid, ``hop`` samples per frame."""

    def __init__(self, in_channels: int = 4, n_classes: int = 18, hop: int = 3200):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, 8, kernel_size=2 * hop, stride=hop)
        self.head = nn.Linear(8, n_classes)

    def forward(self, batch: dict) -> dict:
        h = torch.log1p(torch.relu(self.conv(batch["waveform"])) * 30.0)  # (B, 8, F)
        return {"probabilities": torch.sigmoid(6.0 * self.head(h.transpose(1, 2)))}


def _sed_gain(sed, lv, n_slots, n_classes):
    """``(B, S, 1, 1)``: per slot, the mean SED probability of the slot's class (SED guidance;
    0.5 for an empty slot)."""
    b = lv.shape[0]
    onehot = lv.view(b, n_slots, n_classes)
    act = sed.mean(dim=1)  # (B, C)
    g = (onehot * act[:, None, :]).sum(-1) + 0.5 * (1.0 - onehot.sum(-1))
    return g[..., None, None]


class TinyGuidedSeparator(TinySeparator):
    """`TinySeparator` whose stems are scaled by the SED activity of their class."""

    def forward(self, batch: dict) -> dict:
        y = super().forward(batch)["waveform"]
        return {"waveform": y * (0.5 + _sed_gain(batch["sed"], batch["label_vector"],
                                                 self.n_slots, self.n_classes))}


class TinyGuidedStage(TinyStage):
    """`TinyStage` that also mixes the SED activity of each slot's class into its gain."""

    def forward(self, batch: dict) -> dict:
        y = super().forward(batch)["waveform"]
        return {"waveform": y * (0.75 + 0.5 * _sed_gain(batch["sed"], batch["label_vector"],
                                                        self.n_slots, self.n_classes))}


class SlowSeparator(TinySeparator):
    """`TinySeparator` (same weights, same outputs) that sleeps ``delay_s`` per forward, so a
    test can kill a build while a chunk is in flight."""

    def __init__(self, delay_s: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.delay_s = float(delay_s)

    def forward(self, batch: dict) -> dict:
        time.sleep(self.delay_s)
        return super().forward(batch)


class WrongShapeSeparator(TinySeparator):
    def forward(self, batch: dict) -> dict:
        return {"waveform": super().forward(batch)["waveform"][:, :, 0]}


class NaNSeparator(TinySeparator):
    def forward(self, batch: dict) -> dict:
        y = super().forward(batch)["waveform"].clone()
        y[:, 0, 0, 0] = float("nan")
        return {"waveform": y}


# ----------------------------------------------------------------------------- fixtures

MODULE = "tests.builder_models"


def write_system(root: Path, stages: int = 0, separators=("small", "large"), seed: int = 0,
                 lightning: bool = True, overrides: dict | None = None, sed: bool = False,
                 iterations: int = 1, stage_retagger: bool = False) -> Path:
    """Write checkpoints under ``root/weights`` and ``root/system.yaml``; return the YAML.

    ``sed``: add a `TinySED` (``frame_hop_s`` 0.1 s) and make the separators and stages
    SED-guided; ``iterations``: each stage runs this many times; ``stage_retagger``: a third
    mono tagger ``stage`` re-tags the stages' stems."""
    root = Path(root)
    (root / "weights").mkdir(parents=True, exist_ok=True)
    specs = {
        ("taggers", "1ch"): ("TinyTagger", {"in_channels": 1}),
        ("taggers", "4ch"): ("TinyTagger", {"in_channels": 4, "hidden": 12}),
    }
    if stage_retagger:
        specs[("taggers", "stage")] = ("TinyTagger", {"in_channels": 1, "hidden": 10})
    for i, name in enumerate(separators):
        specs[("separators", name)] = ("TinyGuidedSeparator" if sed else "TinySeparator",
                                       {"hidden": 4 + 4 * i})
    for i in range(stages):
        specs[("stages", f"refine{i + 1}")] = ("TinyGuidedStage" if sed else "TinyStage", {})
    if sed:
        specs[("sed", "sed")] = ("TinySED", {})
    data: dict = {"label_set": "dcase2026t4", "sample_rate_hz": RATE, "n_tracks": 3,
                  "taggers": {}, "separators": {}, "retagger": "1ch", "stages": [],
                  "allow_pickle": False, "python_path": [str(Path(__file__).parents[1])]}
    for n, ((group, name), (cls, args)) in enumerate(specs.items()):
        torch.manual_seed(seed * 100 + n)
        model = globals()[cls](**args)
        state = model.state_dict()
        if lightning and group == "separators":
            state = {"state_dict": {f"model.{k}": v for k, v in state.items()}}
        ckpt = f"weights/{group}_{name}.pt"
        torch.save(state, root / ckpt)
        entry = {"module": MODULE, "class": cls, "args": args, "checkpoint": ckpt}
        if sed and group in ("separators", "stages"):
            entry["sed_guided"] = True
        if group == "taggers" and name == "stage":
            entry["channels"] = [0]
        if group == "stages":
            data["stages"].append({"name": name, **entry,
                                   **({"iterations": iterations} if iterations != 1 else {}),
                                   **({"retagger": "stage"} if stage_retagger else {})})
        elif group == "sed":
            data["sed"] = {"name": name, **entry, "frame_hop_s": 0.1}
        else:
            data[group][name] = entry
    data.update(overrides or {})
    path = root / "system.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _bank() -> dict[str, list[np.ndarray]]:
    bank: dict[str, list[np.ndarray]] = {}
    for f in ("46_real_bell_typing_short", "47_real_speech_alarm_long",
              "48_real_dup_speech_long"):
        d = np.load(CASES / f"{f}.npz")
        for lab, w in zip(d["ref_labels"], d["ref_wavs"]):
            if lab != "silence":
                bank.setdefault(str(lab), []).append(w.astype(np.float32))
    return bank


def write_metadata(root: Path, split: str, fmt: str = "parquet",
                   column: str = "split") -> Path:
    """``root/metadata.<fmt>`` as the generator writes it (one row per event; a background row
    for every soundscape), tagging every soundscape of ``root/soundscape`` with ``split``."""
    import pandas as pd
    rows = []
    for wav in sorted((Path(root) / "soundscape").glob("*.wav")):
        targets = sorted((Path(root) / "oracle_target").glob(f"{wav.stem}_*.wav"))
        for i, t in enumerate(targets):
            rows.append({column: split, "soundscape": wav.stem, "event": i, "role": "target",
                         "label": t.stem.rsplit("_", 1)[1], "oracle_file": t.name})
        rows.append({column: split, "soundscape": wav.stem, "event": len(targets),
                     "role": "noise", "label": "noise", "oracle_file": ""})
    df = pd.DataFrame(rows)
    path = Path(root) / f"metadata.{fmt}"
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def write_soundscapes(root: Path, n: int = 6, seconds: float = 1.0, seed: int = 0,
                      oracle: bool = True, n_channels: int = 4, rate: int = RATE,
                      prefix: str = "soundscape") -> tuple[Path, Path | None]:
    """Mix 0-3 real sources per soundscape into ``root/soundscape`` (4 ch, float) and write the
    dry channel-0 sources to ``root/oracle_target`` (the generator's split-folder layout).
    Returns the two folders."""
    rng = np.random.default_rng(seed)
    bank = _bank()
    labels = sorted(bank)
    t = int(seconds * RATE)
    sdir, odir = Path(root) / "soundscape", Path(root) / "oracle_target"
    sdir.mkdir(parents=True, exist_ok=True)
    if oracle:
        odir.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        name = f"{prefix}_{k:04d}"
        n_src = [1, 2, 3, 2, 0, 3][k % 6]
        mix = 0.003 * rng.standard_normal((n_channels, t)).astype(np.float32)
        for i in range(n_src):
            lab = labels[rng.integers(len(labels))] if i < 2 or k % 4 else labels[0]
            src = bank[lab][rng.integers(len(bank[lab]))]
            if len(src) >= t:
                start = int(rng.integers(0, len(src) - t + 1))
                dry = src[start:start + t].copy()
            else:
                dry = np.zeros(t, np.float32)
                at = int(rng.integers(0, t - len(src)))
                dry[at:at + len(src)] = src
            dry *= np.float32(10 ** (rng.uniform(-6, 0) / 20))
            for c in range(n_channels):
                mix[c] += np.roll(dry, 3 * c) * np.float32(1.0 - 0.1 * c)
            if oracle:
                sf.write(odir / f"{name}_{i}_{lab}.wav", dry, rate, subtype="FLOAT")
        sf.write(sdir / f"{name}.wav", mix.T, rate, subtype="FLOAT")
    return sdir, (odir if oracle else None)
