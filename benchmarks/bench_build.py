"""Cache-build benchmark on CPU.

1. Throughput of `cache_builder.build_cache` (soundscapes/s) with the tiny random-weight test
   models on real-audio soundscapes, and the forward passes per soundscape (tagger,
   separator, stage, re-tag).
2. Seconds per separator forward on a 10 s 4-channel batch with a random-weight model of the
   DCASE baseline separator's size (a ResUNet30-shaped STFT U-Net with FiLM label
   conditioning, ~30 M parameters: ``ResUNet30``'s layer layout with widths x1.18; not its
   code).
3. A whole `build_cache` run (system YAML, checkpoint load, closure, batches, re-tagging,
   Parquet parts) with that ~30 M-parameter separator and the tiny taggers, on
   ``--big-build-soundscapes`` clips of ``--big-build-seconds`` (short clips keep the run
   short on CPU): measured soundscapes/s and passes per soundscape, plus the figure
   extrapolated to 10 s clips from (2) (separator passes × seconds per item).

Run: ``python benchmarks/bench_build.py [--soundscapes 8] [--seconds 10] [--big-batch 1]``
(about 3 minutes on 2 CPU cores with the defaults). The random tiny taggers propose many
classes, so their closures (~30 queries per soundscape) are larger than a trained system's.
No GPU is used (CUDA is reported when present, but the figures are CPU figures).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- big model


class _Block(nn.Module):
    """Pre-activation residual block (BN → +β(label) → LeakyReLU → 3×3 conv, twice)."""

    def __init__(self, cin: int, cout: int, cond: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.b1, self.b2 = nn.Linear(cond, cin), nn.Linear(cond, cout)
        self.short = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, c):
        h = self.c1(F.leaky_relu(self.bn1(x) + self.b1(c)[..., None, None], 0.01))
        h = self.c2(F.leaky_relu(self.bn2(h) + self.b2(c)[..., None, None], 0.01))
        return self.short(x) + h


class BaselineSizedSeparator(nn.Module):
    """Label-queried STFT U-Net, ResUNet30 widths (32-64-128-256-384-384, bottleneck 384),
    n_fft 1024, hop 160; complex-ratio masks per slot and input channel, 1×1 conv to mono.
    ``width`` scales the channel widths: 1.0 gives 21.8 M parameters, 1.18 (the benchmark
    default) 30.6 M, the size quoted for the baseline separator."""

    def __init__(self, n_classes: int = 18, n_slots: int = 3, in_channels: int = 4,
                 width: float = 1.0):
        super().__init__()
        self.n_slots, self.cin, self.k = n_slots, in_channels, 3
        cond = n_slots * n_classes
        w = [8 * round(c * width / 8) for c in (32, 64, 128, 256, 384)]
        widths = [w[0], w[1], w[2], w[3], w[4], w[4]]
        self.pools = [(2, 2)] * 5 + [(1, 2)]
        self.pre = nn.Conv2d(in_channels, w[0], 1)
        self.enc = nn.ModuleList(_Block(a, b, cond) for a, b in zip([w[0]] + widths[:-1], widths))
        self.mid = _Block(w[4], w[4], cond)
        dec = list(zip([w[4], w[4], w[4], w[3], w[2], w[1]], [w[4], w[4], w[3], w[2], w[1], w[0]]))
        self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, p, stride=p, bias=False)
                                for (a, b), p in zip(dec, reversed(self.pools)))
        self.dec = nn.ModuleList(_Block(2 * b, b, cond) for _, b in dec)
        self.after = nn.Conv2d(w[0], in_channels * self.k * n_slots, 1)
        self.out = nn.Conv2d(in_channels, 1, 1)
        self.register_buffer("window", torch.hann_window(1024), persistent=False)

    def forward(self, batch):
        mix, c = batch["mixture"], batch["label_vector"]
        b, ch, t = mix.shape
        spec = torch.stft(mix.reshape(b * ch, t), 1024, 160, window=self.window,
                          return_complex=True)  # (b·ch, F, frames)
        mag = spec.abs().view(b, ch, *spec.shape[1:]).transpose(2, 3)  # (b, ch, T', F)
        x = self.pre(mag[..., :-1])
        frames = x.shape[2]
        pad = (-frames) % 32
        x = F.pad(x, (0, 0, 0, pad))
        skips = []
        for blk, p in zip(self.enc, self.pools):
            x = blk(x, c)
            skips.append(x)
            x = F.avg_pool2d(x, p)
        x = self.mid(x, c)
        for up, blk in zip(self.up, self.dec):
            x = blk(torch.cat([up(x), skips.pop()], 1), c)
        x = self.after(x)[:, :, :frames]
        x = x.view(b, self.n_slots, ch, self.k, frames, -1)
        m = torch.sigmoid(x[:, :, :, 0]) * torch.complex(torch.tanh(x[:, :, :, 1]),
                                                         torch.tanh(x[:, :, :, 2]))
        m = F.pad(m, (0, 1)).transpose(-1, -2)  # (b, S, ch, F, T')
        est = m * spec.view(b, 1, ch, *spec.shape[1:])
        wav = torch.istft(est.reshape(-1, *est.shape[-2:]), 1024, 160, window=self.window,
                          length=t).view(b * self.n_slots, ch, 1, t)
        wav = self.out(wav).view(b, self.n_slots, 1, t)
        return {"waveform": wav}


def bench_big(batches, seconds: float, repeats: int, width: float = 1.18) -> list[dict]:
    model = BaselineSizedSeparator(width=width).eval()
    n_params = sum(p.numel() for p in model.parameters())
    rows = []
    for b in batches:
        mix = 0.1 * torch.randn(b, 4, int(seconds * 32000))
        lv = torch.zeros(b, 54)
        lv[:, 15] = lv[:, 18 + 3] = 1.0
        with torch.inference_mode():
            model({"mixture": mix, "label_vector": lv})  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                y = model({"mixture": mix, "label_vector": lv})["waveform"]
                times.append(time.perf_counter() - t0)
        assert y.shape == (b, 3, 1, mix.shape[-1])
        rows.append({"batch": b, "n_params": n_params, "seconds_per_forward": min(times),
                     "seconds_per_item": min(times) / b, "audio_seconds": seconds})
    return rows


# ----------------------------------------------------------------------------- tiny build


def bench_tiny(n: int, seconds: float, stages: int, jobs: int, batch_size: int,
               threads=None) -> dict:
    from cache_builder import build_cache
    from tests.builder_models import write_soundscapes, write_system
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        y = write_system(tmp / "sys", stages=stages)
        sdir, odir = write_soundscapes(tmp / "data", n=n, seconds=seconds)
        t0 = time.perf_counter()
        rep = build_cache(y, sdir, tmp / "cache", oracle=odir, chunk_size=8, jobs=jobs,
                          batch_size=batch_size, device="cpu", threads=threads)
        wall = time.perf_counter() - t0
    return {"n_soundscapes": n, "audio_seconds": seconds, "stages": stages,
            "torch_threads": torch.get_num_threads(),
            "wall_s": wall, "soundscapes_per_s": n / wall,
            "queries_per_soundscape": rep.n_queries / n,
            "passes_per_soundscape": rep.per_soundscape(),
            "calls": rep.calls}


def bench_big_build(n: int, seconds: float, batch_size: int, width: float, jobs: int,
                    threads=None) -> dict:
    """`build_cache` with the baseline-sized separator (random weights, saved as a plain
    state_dict checkpoint) and the tiny taggers; one separator, no stage."""
    import yaml
    from cache_builder import build_cache
    from tests.builder_models import write_soundscapes, write_system
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        y = write_system(tmp / "sys", separators=("big",))
        data = yaml.safe_load(y.read_text())
        torch.manual_seed(0)
        model = BaselineSizedSeparator(width=width)
        torch.save(model.state_dict(), tmp / "sys" / "weights" / "big.pt")
        n_params = sum(p.numel() for p in model.parameters())
        del model
        data["python_path"] = [*data["python_path"], str(Path(__file__).resolve().parent)]
        data["separators"] = {"big": {"module": Path(__file__).stem,
                                      "class": "BaselineSizedSeparator",
                                      "args": {"width": width}, "checkpoint": "weights/big.pt"}}
        y.write_text(yaml.safe_dump(data, sort_keys=False))
        sdir, odir = write_soundscapes(tmp / "data", n=n, seconds=seconds)
        t0 = time.perf_counter()
        rep = build_cache(y, sdir, tmp / "cache", oracle=odir, chunk_size=n, jobs=jobs,
                          batch_size=batch_size, device="cpu", threads=threads)
        wall = time.perf_counter() - t0
    return {"n_soundscapes": n, "audio_seconds": seconds, "n_params": n_params,
            "batch_size": batch_size, "wall_s": wall, "soundscapes_per_s": n / wall,
            "queries_per_soundscape": rep.n_queries / n,
            "passes_per_soundscape": rep.per_soundscape(), "calls": rep.calls}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--soundscapes", type=int, default=8)
    p.add_argument("--tiny-seconds", type=float, default=10.0)
    p.add_argument("--stages", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0, help="big-model clip length")
    p.add_argument("--big-batch", type=int, nargs="+", default=[1])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--width", type=float, default=1.18,
                   help="channel-width factor of the big model (1.18: ~30 M parameters)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--skip-big", action="store_true")
    p.add_argument("--big-build-soundscapes", type=int, default=1,
                   help="clips in the build with the ~30 M separator (0: skip it)")
    p.add_argument("--big-build-seconds", type=float, default=1.0)
    p.add_argument("--big-build-batch", type=int, default=4)
    p.add_argument("--json", type=Path, default=None, help="also write results here")
    args = p.parse_args(argv)
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
           "cuda_available": torch.cuda.is_available(),
           "load_average_1min": round(os.getloadavg()[0], 2)}
    print(f"environment: {env}")
    print("NOTE: no GPU is used in this benchmark (none is available to this task); "
          "all figures are CPU figures.")
    out = {"environment": env}
    out["tiny"] = tiny = bench_tiny(args.soundscapes, args.tiny_seconds, args.stages,
                                    args.jobs, args.batch_size, args.threads)
    print(f"tiny models, {tiny['n_soundscapes']} soundscapes of {tiny['audio_seconds']} s, "
          f"{tiny['stages']} stage(s), {tiny['torch_threads']} torch thread(s): "
          f"{tiny['soundscapes_per_s']:.2f} soundscapes/s "
          f"({tiny['wall_s']:.1f} s wall); queries/soundscape "
          f"{tiny['queries_per_soundscape']:.1f}")
    print("forward passes per soundscape: " + ", ".join(
        f"{k} {v:.1f}" for k, v in tiny["passes_per_soundscape"].items()))
    if not args.skip_big:
        if args.threads:
            torch.set_num_threads(args.threads)
        out["big"] = big = bench_big(args.big_batch, args.seconds, args.repeats, args.width)
        for r in big:
            print(f"baseline-sized separator ({r['n_params'] / 1e6:.1f} M params), batch "
                  f"{r['batch']} x 4 ch x {r['audio_seconds']} s: "
                  f"{r['seconds_per_forward']:.2f} s per forward "
                  f"({r['seconds_per_item']:.2f} s per item) on CPU")
    if args.big_build_soundscapes > 0:
        bb = out["big_build"] = bench_big_build(
            args.big_build_soundscapes, args.big_build_seconds, args.big_build_batch,
            args.width, args.jobs, args.threads)
        per = bb["passes_per_soundscape"]
        print(f"build with the baseline-sized separator ({bb['n_params'] / 1e6:.1f} M params), "
              f"{bb['n_soundscapes']} soundscapes of {bb['audio_seconds']} s, batch "
              f"{bb['batch_size']}: {bb['soundscapes_per_s']:.3f} soundscapes/s "
              f"({bb['wall_s']:.1f} s wall); queries/soundscape "
              f"{bb['queries_per_soundscape']:.1f}; forward passes per soundscape: "
              + ", ".join(f"{k} {v:.1f}" for k, v in per.items()))
        print(f"  {bb['wall_s'] / max(bb['n_soundscapes'] * per.get('separator', 1), 1):.2f} s "
              f"of build per separated query of {bb['audio_seconds']} s (all phases)")
        if "big" in out:
            item = min(r["seconds_per_item"] for r in out["big"])
            sec = per.get("separator", 0.0) * item
            bb["extrapolated_10s"] = {"seconds_per_soundscape": sec,
                                      "soundscapes_per_s": 1.0 / sec if sec else None}
            print(f"extrapolated to {args.seconds} s clips (separator passes x "
                  f"{item:.2f} s per item, taggers and re-tagging not counted): "
                  f"{sec:.0f} s per soundscape, {1.0 / sec:.4f} soundscapes/s on this CPU")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
