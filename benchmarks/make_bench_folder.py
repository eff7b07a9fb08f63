"""Write a synthetic DCASE evaluation folder set for benchmarks (not for the repository).

Each soundscape: ``seconds`` at 32 kHz, 4-channel FLOAT; 1-3 oracle references (some classes
repeated); 3 estimate stems (a noisy copy of a reference, sometimes a wrong or repeated label).
Signals are cut from a small bank of noise so that generation is fast.

Usage: ``python benchmarks/make_bench_folder.py OUT_DIR [--n 200] [--seconds 10]``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from casdri.labels import DCASE2026T4  # noqa: E402

SR = 32000


def make_bench_folder(root, n_soundscapes: int = 200, seconds: float = 10.0,
                      seed: int = 0) -> tuple[Path, Path, Path]:
    """Write ``root/{soundscape,oracle_target,estimate}``; return the three folders."""
    root = Path(root)
    dirs = root / "soundscape", root / "oracle_target", root / "estimate"
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = int(round(seconds * SR))
    bank = rng.standard_normal((16, t + 4096), dtype=np.float32)
    classes = DCASE2026T4.classes

    def piece():
        k, s = rng.integers(16), rng.integers(4096)
        return bank[k, s:s + t] * np.float32(rng.uniform(0.2, 1.0))

    for n in range(n_soundscapes):
        name = f"soundscape_{n:05d}"
        n_ref = int(rng.integers(1, 4))
        ref_labels = list(rng.choice(classes, n_ref, replace=False))
        if n_ref >= 2 and rng.random() < 0.3:
            ref_labels[1] = ref_labels[0]  # a repeated class
        refs = [piece() for _ in ref_labels]
        mix = np.sum(refs, axis=0) + 0.3 * piece()
        gains = np.array([1.0, 0.9, 0.8, 0.7], np.float32)
        sf.write(dirs[0] / f"{name}.wav", mix[:, None] * gains, SR, subtype="FLOAT")
        for i, (label, ref) in enumerate(zip(ref_labels, refs)):
            sf.write(dirs[1] / f"{name}_{i}_{label}.wav", ref, SR, subtype="FLOAT")
        for i in range(3):
            j = i % n_ref
            label = ref_labels[j] if rng.random() < 0.8 else str(rng.choice(classes))
            est = refs[j] + np.float32(rng.uniform(0.1, 1.0)) * piece()
            sf.write(dirs[2] / f"{name}_{i}_{label}.wav", est, SR, subtype="FLOAT")
    return dirs


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    print(*make_bench_folder(a.out_dir, a.n, a.seconds), sep="\n")
