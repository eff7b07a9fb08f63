"""The reference system's networks: two taggers, a frame-level SED model, two label-queried
separators and a SED-guided refinement stage.

Conventions:
    * Audio is float32 at 32 kHz; first-order ambisonics in the DCASE channel order
      ``W, Y, Z, X`` (ACN, SN3D).
    * **Tagger**: ``forward({'waveform': (B, ch, T)}) -> {'probabilities': (B, n_tracks,
      C + 1)}`` holding **logits** (the caller applies the softmax); silence is the last column
      (index ``C``). Each track predicts one source or silence; training pairs tracks with
      the reference labels by permutation (`pit_cross_entropy`).
    * **Separator**: ``forward({'mixture': (B, 4, T), 'label_vector': (B, n_slots·C)}) ->
      {'waveform': (B, n_slots, 1, T)}``; the label vector stacks one one-hot per slot, an
      empty slot is all zeros and yields an all-zero stem (the slot is not computed). Slots are separated
      independently given their class and their **occurrence index** (how many earlier slots
      ask for the same class), so ``(Speech, Speech)`` yields two different stems.
    * **SED**: ``forward({'waveform': (B, 4, T)}) -> {'probabilities': (B, n_frames, C)}``
      frame **probabilities** (sigmoid applied), one frame per ``SED_HOP`` samples (0.1 s),
      ``n_frames = ceil((1 + T // 640) / 5)``; frame ``j`` covers about samples
      ``[j·SED_HOP, (j + 1)·SED_HOP)``.
    * **Refinement stage**: ``forward({'mixture': (B, 4, T), 'label_vector': (B, n_slots·C),
      'stems': (B, n_slots, 1, T), 'sed': (B, n_frames, C)}) -> {'waveform': (B, n_slots, 1,
      T)}``: per active slot, a new stem ``g·S + m·W`` in the STFT domain from the previous
      stem ``S`` and the mixture's W channel, gains ``g ∈ (0, 2)``, ``m ∈ (−1, 1)`` predicted
      from both spectra and the slot class's SED track; it starts as the identity
      (``g = 1``, ``m = 0``), so it is fit to be iterated. Empty slots stay all-zero.
    * Every item of a batch is computed on its own (no batch statistics in eval mode), any
      ``T >= 1`` works (padded inside, cropped back), constructor arguments are plain YAML
      values, and the STFT/mel constants are non-persistent buffers (not in the state_dict).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Tagger1ch", "Tagger4ch", "SedDetector", "MaskSeparator", "BeamSeparator",
           "RefineStage", "pit_cross_entropy", "mel_filterbank", "n_parameters", "SED_HOP"]

#: samples per SED frame (0.1 s at 32 kHz; = `cache_builder.reference.data.ENVELOPE_HOP`)
SED_HOP = 3200

_EPS = 1e-8


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate_hz: int, fmin_hz: float = 20.0,
                   fmax_hz: float | None = None) -> np.ndarray:
    """HTK-mel triangular filters, ``(n_mels, n_fft // 2 + 1)`` float32, peak 1 per filter."""
    fmax_hz = fmax_hz or sample_rate_hz / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin_hz), mel(fmax_hz), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate_hz / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / np.maximum(mid - lo, 1e-6)
    down = (hi - freqs[None]) / np.maximum(hi - mid, 1e-6)
    return np.clip(np.minimum(up, down), 0.0, None).astype(np.float32)


def _stft(x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """``(N, T) -> (N, n_fft//2+1, frames)`` complex; zero padding, so any ``T`` works."""
    return torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="constant",
                      return_complex=True)


def _padded_length(t: int, hop: int, n_fft: int) -> int:
    return max(int(math.ceil(t / hop)) * hop, n_fft)


# ----------------------------------------------------------------------------- features


class _Features(nn.Module):
    """Log-mel of W, optionally with mel-band active-intensity vectors (Y, Z, X)."""

    def __init__(self, n_fft: int, hop: int, n_mels: int, sample_rate_hz: int,
                 intensity: bool):
        super().__init__()
        self.n_fft, self.hop, self.intensity = n_fft, hop, intensity
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(n_fft, n_mels,
                                                                    sample_rate_hz)),
                             persistent=False)

    @property
    def n_out(self) -> int:
        return self.mel.shape[0] * (4 if self.intensity else 1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, ch, T)`` → ``(B, n_out, frames)`` (frames = 1 + T // hop)."""
        b, ch, t = waveform.shape
        chans = 4 if self.intensity else 1
        spec = _stft(waveform[:, :chans].reshape(b * chans, t), self.n_fft, self.hop,
                     self.window)
        spec = spec.reshape(b, chans, *spec.shape[-2:])
        w = spec[:, 0]
        power = w.real ** 2 + w.imag ** 2
        logmel = torch.log(torch.einsum("mf,bfn->bmn", self.mel, power) + _EPS)
        if not self.intensity:
            return logmel
        # active intensity Re(W* · [Y, Z, X]) over mel bands, normalised by the band energy
        iv = (w.real.unsqueeze(1) * spec[:, 1:].real + w.imag.unsqueeze(1) * spec[:, 1:].imag)
        energy = power + (spec[:, 1:].abs() ** 2).sum(1) / 3.0
        iv_mel = torch.einsum("mf,bcfn->bcmn", self.mel, iv)
        en_mel = torch.einsum("mf,bfn->bmn", self.mel, energy).unsqueeze(1) + _EPS
        return torch.cat([logmel, (iv_mel / en_mel).flatten(1, 2)], dim=1)


# ----------------------------------------------------------------------------- taggers


class _TrackDecoder(nn.Module):
    """``n_tracks`` learned queries: attention pooling over time, self-attention across
    tracks, then logits over C + 1 (silence last)."""

    def __init__(self, dim: int, n_tracks: int, n_out: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.queries = nn.Parameter(torch.randn(n_tracks, dim) * dim ** -0.5)
        self.kv = nn.Conv1d(dim, 2 * dim, 1)
        self.pool_out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.norm3 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, dim, frames)`` → ``(B, n_tracks, n_out)``."""
        b, d, n = h.shape
        k, v = self.kv(h).chunk(2, dim=1)
        hd = d // self.n_heads
        k = k.reshape(b, self.n_heads, hd, n)
        v = v.reshape(b, self.n_heads, hd, n)
        q = self.queries.reshape(-1, self.n_heads, hd)                   # (K, H, hd)
        att = torch.softmax(torch.einsum("khd,bhdn->bhkn", q, k) * hd ** -0.5, dim=-1)
        pooled = torch.einsum("bhkn,bhdn->bkhd", att, v).reshape(b, -1, d)
        x = self.norm1(self.queries + self.pool_out(pooled))
        x = self.norm2(x + self.self_attn(x, x, x, need_weights=False)[0])
        x = self.norm3(x + self.ffn(x))
        return self.head(x)


class _Tagger(nn.Module):
    def __init__(self, n_in_channels: int, n_classes: int, n_tracks: int, n_mels: int,
                 dim: int, n_layers: int, n_heads: int, n_fft: int, hop: int,
                 sample_rate_hz: int):
        super().__init__()
        self.n_in_channels, self.n_classes, self.n_tracks = n_in_channels, n_classes, n_tracks
        self.features = _Features(n_fft, hop, n_mels, sample_rate_hz, n_in_channels == 4)
        layers = [nn.BatchNorm1d(self.features.n_out)]
        c_in = self.features.n_out
        for i in range(n_layers):
            layers += [nn.Conv1d(c_in, dim, 3, padding=1), nn.BatchNorm1d(dim), nn.ReLU()]
            if i < 3:
                layers.append(nn.MaxPool1d(2, ceil_mode=True))
            c_in = dim
        self.encoder = nn.Sequential(*layers)
        self.decoder = _TrackDecoder(dim, n_tracks, n_classes + 1, n_heads)
        # training aid: per-class attention pooling → clip-level presence logits
        self.presence = nn.Conv1d(dim, 2 * n_classes, 1)

    def select(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 3:
            raise ValueError(f"{type(self).__name__}: expected waveform (B, ch, T), got shape "
                             f"{tuple(waveform.shape)}")
        ch = waveform.shape[1]
        if self.n_in_channels == 1:
            return waveform[:, :1]
        if ch < 4:
            raise ValueError(f"{type(self).__name__}: needs 4 FOA channels (W, Y, Z, X), got "
                             f"{ch}; feed mono stems to Tagger1ch")
        return waveform[:, :4]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``(B, n_feat, frames)`` → logits ``(B, n_tracks, C + 1)``."""
        return self.decoder(self.encoder(features))

    def loss(self, features: torch.Tensor, targets: torch.Tensor,
             presence_weight: float = 0.5) -> torch.Tensor:
        """Training loss: `pit_cross_entropy` of the tracks plus ``presence_weight`` × the
        binary cross-entropy of clip-level class presence (a faster signal for the encoder)."""
        h = self.encoder(features)
        loss = pit_cross_entropy(self.decoder(h), targets)
        if presence_weight:
            att, logit = self.presence(h).chunk(2, dim=1)
            clip = (torch.softmax(att, dim=-1) * logit).sum(-1)                  # (B, C)
            present = F.one_hot(targets, self.n_classes + 1)[..., :-1].amax(1).float()
            loss = loss + presence_weight * F.binary_cross_entropy_with_logits(clip, present)
        return loss

    def forward(self, batch: dict) -> dict:
        x = self.select(batch["waveform"].float())
        return {"probabilities": self.classify(self.features(x))}


class Tagger1ch(_Tagger):
    """Mono tagger: log-mel of channel 0, conv encoder, three track queries (~0.3 M params).

    Accepts ``(B, 1, T)`` (a mixture channel or a separated stem) and uses channel 0 of
    ``(B, ch, T)``.
    """

    def __init__(self, n_classes: int = 18, n_tracks: int = 3, n_mels: int = 64,
                 dim: int = 128, n_layers: int = 4, n_heads: int = 4, n_fft: int = 1024,
                 hop: int = 640, sample_rate_hz: int = 32000):
        super().__init__(1, n_classes, n_tracks, n_mels, dim, n_layers, n_heads, n_fft, hop,
                         sample_rate_hz)


class Tagger4ch(_Tagger):
    """FOA tagger: log-mel of W plus mel-band intensity vectors of (Y, Z, X)."""

    def __init__(self, n_classes: int = 18, n_tracks: int = 3, n_mels: int = 64,
                 dim: int = 128, n_layers: int = 4, n_heads: int = 4, n_fft: int = 1024,
                 hop: int = 640, sample_rate_hz: int = 32000):
        super().__init__(4, n_classes, n_tracks, n_mels, dim, n_layers, n_heads, n_fft, hop,
                         sample_rate_hz)


def pit_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Permutation-invariant cross-entropy of track logits.

    Args:
        logits: ``(B, K, C + 1)``.
        targets: ``(B, K)`` int64 class indices, silence = ``C`` for empty tracks.

    Returns:
        Scalar: mean over the batch of the smallest summed cross-entropy over the ``K!``
        assignments of targets to tracks, divided by ``K``.
    """
    logp = torch.log_softmax(logits, dim=-1)
    k = logits.shape[1]
    # cost[b, i, j] = -log p(track i = target j)
    cost = -torch.gather(logp, 2, targets.unsqueeze(1).expand(-1, k, -1))
    perms = torch.tensor(list(itertools.permutations(range(k))), device=logits.device)
    ar = torch.arange(k, device=logits.device)
    total = cost[:, ar.unsqueeze(0).expand_as(perms), perms].sum(-1)   # (B, K!)
    return total.min(dim=1).values.mean() / k


# ----------------------------------------------------------------------------- separators


class _ChannelNorm(nn.Module):
    """Layer norm over channels, per frame (independent of length and batch)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, 1))
        self.bias = nn.Parameter(torch.zeros(dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + 1e-5) * self.weight + self.bias


class _TcnBlock(nn.Module):
    """Conv-TasNet block (1x1, depthwise dilated, 1x1) with optional FiLM by the query."""

    def __init__(self, dim: int, hidden: int, dilation: int, cond_dim: int = 0):
        super().__init__()
        self.inp = nn.Conv1d(dim, hidden, 1)
        self.act1, self.norm1 = nn.PReLU(), _ChannelNorm(hidden)
        self.dw = nn.Conv1d(hidden, hidden, 3, padding=dilation, dilation=dilation,
                            groups=hidden)
        self.act2, self.norm2 = nn.PReLU(), _ChannelNorm(hidden)
        self.out = nn.Conv1d(hidden, dim, 1)
        self.film = nn.Linear(cond_dim, 2 * hidden) if cond_dim else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm1(self.act1(self.inp(x)))
        if self.film is not None:
            gamma, beta = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
            y = y * (1.0 + gamma) + beta
        y = self.norm2(self.act2(self.dw(y)))
        return x + self.out(y)


class _Separator(nn.Module):
    """STFT front end, shared mixture encoder, query-conditioned blocks per slot.

    Subclasses set ``n_mask`` (values per bin a slot predicts) and ``apply_mask``.
    """

    n_mask = 1

    def __init__(self, n_classes: int, n_slots: int, n_fft: int, hop: int, dim: int,
                 hidden: int, n_shared: int, n_cond: int, cond_dim: int):
        super().__init__()
        self.n_classes, self.n_slots, self.n_fft, self.hop = n_classes, n_slots, n_fft, hop
        self.n_bins = n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.inp = nn.Sequential(nn.Conv1d(4 * self.n_bins, dim, 1), _ChannelNorm(dim))
        self.shared = nn.ModuleList(_TcnBlock(dim, hidden, 2 ** (i % 4))
                                    for i in range(n_shared))
        self.embed = nn.Linear(n_classes, cond_dim)
        self.occurrence = nn.Embedding(n_slots, cond_dim)
        self.cond = nn.ModuleList(_TcnBlock(dim, hidden, 2 ** (i % 4), cond_dim)
                                  for i in range(n_cond))
        self.mask = nn.Conv1d(dim, self.n_mask * self.n_bins, 1)

    # -- pieces ------------------------------------------------------------------------

    def spectrum(self, mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Scale-normalised STFT ``(B, 4, F, N)`` complex, the scale ``(B,)``, padded T."""
        b, ch, t = mixture.shape
        if ch != 4:
            raise ValueError(f"{type(self).__name__}: mixture must be (B, 4, T) FOA, got "
                             f"{tuple(mixture.shape)}")
        scale = mixture[:, 0].pow(2).mean(-1).add(1e-10).sqrt()
        tp = _padded_length(t, self.hop, self.n_fft)
        x = F.pad(mixture / scale[:, None, None], (0, tp - t))
        spec = _stft(x.reshape(b * 4, tp), self.n_fft, self.hop, self.window)
        return spec.reshape(b, 4, *spec.shape[-2:]), scale, tp

    def encode(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, 4, F, N)`` → ``(B, dim, N)``: log power of W + normalised intensity."""
        w = spec[:, 0]
        power = w.real ** 2 + w.imag ** 2
        energy = power + (spec[:, 1:].abs() ** 2).sum(1) / 3.0 + 1e-6
        iv = (w.real.unsqueeze(1) * spec[:, 1:].real
              + w.imag.unsqueeze(1) * spec[:, 1:].imag) / energy.unsqueeze(1)
        feats = torch.cat([torch.log(power + 1e-6).unsqueeze(1), iv], dim=1)
        h = self.inp(feats.flatten(1, 2))
        for block in self.shared:
            h = block(h)
        return h

    def occurrences(self, label_vector: torch.Tensor) -> torch.Tensor:
        """``(B, n_slots·C)`` → ``(B, n_slots)`` long: how many earlier slots ask for the
        same class."""
        q = label_vector.float().reshape(-1, self.n_slots, self.n_classes)
        same = torch.einsum("bsc,btc->bst", q, q)                       # 1 where same class
        earlier = torch.tril(torch.ones(self.n_slots, self.n_slots, device=q.device), -1)
        return (same * earlier).sum(-1).round().clamp(0, self.n_slots - 1).long()

    def condition(self, label_vector: torch.Tensor) -> torch.Tensor:
        """``(B, n_slots·C)`` → ``(B·n_slots, cond_dim)`` class + occurrence embedding."""
        q = label_vector.float().reshape(-1, self.n_slots, self.n_classes)
        active = q.sum(-1, keepdim=True).clamp(0, 1)
        emb = self.embed(q) + self.occurrence(self.occurrences(label_vector)) * active
        return emb.reshape(-1, emb.shape[-1])

    @staticmethod
    def _first_equal(*tensors: torch.Tensor) -> list[int]:
        """Per item, the first item whose every tensor (a mixture; its SED...) is
        bit-identical."""
        reps: list[int] = []
        first = []
        for b in range(tensors[0].shape[0]):
            hit = next((r for r in reps if all(torch.equal(x[b], x[r]) for x in tensors)),
                       None)
            if hit is None:
                reps.append(b)
                hit = b
            first.append(hit)
        return first

    def separate(self, mixture: torch.Tensor, label_vector: torch.Tensor) -> torch.Tensor:
        """The forward pass, ``(B, n_slots, T)``.

        A slot's stem depends only on the mixture, its class and its occurrence index, so
        repeated work is skipped: items holding the same mixture (the cache builder
        separates many queries of one soundscape per batch) are encoded once, and slots
        asking for the same (mixture, class, occurrence) are computed once and copied.
        """
        b, _, t = mixture.shape
        s = self.n_slots
        if label_vector.shape != (b, s * self.n_classes):
            raise ValueError(f"{type(self).__name__}: label_vector must be (B, n_slots·C) = "
                             f"({b}, {s * self.n_classes}), got {tuple(label_vector.shape)}")
        out = mixture.new_zeros(b * s, t, dtype=torch.float32)
        active = label_vector.reshape(b * s, self.n_classes).sum(-1) > 0
        rows = active.nonzero().squeeze(1).tolist()
        if not rows:
            return out.reshape(b, s, t)
        first = self._first_equal(mixture)
        reps = sorted(set(first))
        rep_of = {r: i for i, r in enumerate(reps)}
        spec, scale, tp = self.spectrum(mixture[reps].float())
        h = self.encode(spec)
        cond = self.condition(label_vector)
        occ = self.occurrences(label_vector).reshape(-1).tolist()
        q = label_vector.reshape(b * s, self.n_classes)
        unique: dict[tuple, int] = {}
        slot_of, todo = [], []          # row -> its computed slot; the row computing each slot
        for r in rows:
            key = (rep_of[first[r // s]], occ[r], tuple(q[r].nonzero().squeeze(1).tolist()))
            if key not in unique:
                unique[key] = len(todo)
                todo.append(r)
            slot_of.append(unique[key])
        item = torch.tensor([rep_of[first[r // s]] for r in todo], dtype=torch.long)
        hs, cs = h[item], cond[torch.tensor(todo, dtype=torch.long)]
        for block in self.cond:
            hs = block(hs, cs)
        mask = self.mask(hs).reshape(len(todo), self.n_mask, self.n_bins, -1)
        est = self.apply_mask(spec[item], mask)                          # (n, F, N)
        wav = torch.istft(est, self.n_fft, self.hop, window=self.window, center=True,
                          length=tp)[:, :t] * scale[item, None]
        out[torch.tensor(rows, dtype=torch.long)] = wav[torch.tensor(slot_of, dtype=torch.long)]
        return out.reshape(b, s, t)

    def apply_mask(self, spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Spectra ``(n, 4, F, N)`` complex and mask ``(n, n_mask, F, N)`` → ``(n, F, N)``."""
        raise NotImplementedError

    def forward(self, batch: dict) -> dict:
        wav = self.separate(batch["mixture"], batch["label_vector"])
        return {"waveform": wav.unsqueeze(2)}


class MaskSeparator(_Separator):
    """Real-valued sigmoid mask on the W channel STFT (small separator)."""

    n_mask = 1

    def __init__(self, n_classes: int = 18, n_slots: int = 3, n_fft: int = 512, hop: int = 256,
                 dim: int = 128, hidden: int = 256, n_shared: int = 4, n_cond: int = 4,
                 cond_dim: int = 64):
        super().__init__(n_classes, n_slots, n_fft, hop, dim, hidden, n_shared, n_cond,
                         cond_dim)

    def apply_mask(self, spec, mask):
        return spec[:, 0] * torch.sigmoid(mask[:, 0])


class BeamSeparator(_Separator):
    """Complex filter over the four FOA channels per time-frequency bin (a learned
    beamformer plus mask): ``Y = Σ_ch M_ch · X_ch``, each ``M_ch`` bounded by tanh."""

    n_mask = 8

    def __init__(self, n_classes: int = 18, n_slots: int = 3, n_fft: int = 512, hop: int = 256,
                 dim: int = 160, hidden: int = 320, n_shared: int = 4, n_cond: int = 4,
                 cond_dim: int = 64):
        super().__init__(n_classes, n_slots, n_fft, hop, dim, hidden, n_shared, n_cond,
                         cond_dim)
        with torch.no_grad():  # start near 0.5 · W: a mask, not noise
            self.mask.weight.mul_(0.1)
            self.mask.bias.zero_()
            self.mask.bias[: self.n_bins] = math.atanh(0.5)

    def apply_mask(self, spec, mask):
        m = torch.tanh(mask)
        m = torch.complex(m[:, 0::2], m[:, 1::2])                         # (n, 4, F, N)
        return (m * spec).sum(1)


# ----------------------------------------------------------------------------- SED


class SedDetector(nn.Module):
    """Frame-level SED from FOA features (log-mel of W + intensity vectors, the 4-channel
    tagger's), a conv encoder at 20 ms, average-pooled to 0.1 s frames, a bidirectional GRU,
    one sigmoid per class (module conventions). In the spirit of the SED front end that
    guides separation in Morocutti et al. (DCASE 2025 Task 4); own small network."""

    def __init__(self, n_classes: int = 18, n_mels: int = 64, dim: int = 96, n_layers: int = 3,
                 n_fft: int = 1024, hop: int = 640, pool: int = 5, sample_rate_hz: int = 32000):
        super().__init__()
        if hop * pool != SED_HOP:
            raise ValueError(f"SedDetector: hop·pool must be {SED_HOP} samples, got "
                             f"{hop}·{pool}")
        self.n_classes, self.pool = n_classes, pool
        self.features = _Features(n_fft, hop, n_mels, sample_rate_hz, intensity=True)
        layers = [nn.BatchNorm1d(self.features.n_out)]
        c_in = self.features.n_out
        for _ in range(n_layers):
            layers += [nn.Conv1d(c_in, dim, 3, padding=1), nn.BatchNorm1d(dim), nn.ReLU()]
            c_in = dim
        self.encoder = nn.Sequential(*layers)
        self.rnn = nn.GRU(dim, dim // 2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(dim, n_classes)

    def frame_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``(B, n_feat, frames)`` → logits ``(B, ceil(frames / pool), C)``."""
        h = F.avg_pool1d(self.encoder(features), self.pool, ceil_mode=True)
        return self.head(self.rnn(h.transpose(1, 2))[0])

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy against ``(B, n_frames, C)`` frame activity in {0, 1} (frames
        past the shorter of the two are ignored)."""
        logits = self.frame_logits(features)
        n = min(logits.shape[1], targets.shape[1])
        return F.binary_cross_entropy_with_logits(logits[:, :n], targets[:, :n].float())

    def forward(self, batch: dict) -> dict:
        x = batch["waveform"].float()
        if x.dim() != 3 or x.shape[1] < 4:
            raise ValueError(f"SedDetector: expected waveform (B, 4, T) FOA, got shape "
                             f"{tuple(x.shape)}")
        return {"probabilities": torch.sigmoid(self.frame_logits(self.features(x[:, :4])))}


# ----------------------------------------------------------------------------- stage


class RefineStage(nn.Module):
    """SED-guided refinement of separated stems (module conventions): a small TCN over the
    log spectra of the stem and of W plus the slot class's SED track, FiLM-conditioned on the
    class, predicting per bin the stem gain ``g`` and the mixture gain ``m`` of the new stem
    ``g·S + m·W``. Iterated refinement of a separator's own output follows Morocutti et al.
    (DCASE 2025 Task 4); own small network."""

    def __init__(self, n_classes: int = 18, n_slots: int = 3, n_fft: int = 512, hop: int = 256,
                 dim: int = 64, hidden: int = 128, n_blocks: int = 4, cond_dim: int = 32):
        super().__init__()
        self.n_classes, self.n_slots, self.n_fft, self.hop = n_classes, n_slots, n_fft, hop
        self.n_bins = n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.inp = nn.Sequential(nn.Conv1d(2 * self.n_bins + 1, dim, 1), _ChannelNorm(dim))
        self.embed = nn.Linear(n_classes, cond_dim)
        self.blocks = nn.ModuleList(_TcnBlock(dim, hidden, 2 ** (i % 4), cond_dim)
                                    for i in range(n_blocks))
        self.gains = nn.Conv1d(dim, 2 * self.n_bins, 1)
        with torch.no_grad():  # the identity: g = 2·sigmoid(0) = 1, m = tanh(0) = 0
            self.gains.weight.mul_(0.01)
            self.gains.bias.zero_()

    def refine(self, mixture: torch.Tensor, label_vector: torch.Tensor, stems: torch.Tensor,
               sed: torch.Tensor) -> torch.Tensor:
        """``(B, 4, T)``, ``(B, n_slots·C)``, ``(B, n_slots, T)``, ``(B, n_frames, C)`` →
        refined stems ``(B, n_slots, T)``."""
        b, _, t = mixture.shape
        s, c = self.n_slots, self.n_classes
        if label_vector.shape != (b, s * c) or stems.shape != (b, s, t):
            raise ValueError(f"RefineStage: expected label_vector ({b}, {s * c}) and stems "
                             f"({b}, {s}, 1, {t}), got {tuple(label_vector.shape)} and "
                             f"{tuple(stems.shape)}")
        q = label_vector.float().reshape(b * s, c)
        out = stems.new_zeros(b * s, t, dtype=torch.float32)
        active = (q.sum(-1) > 0).nonzero().squeeze(1).tolist()
        if not active:
            return out.reshape(b, s, t)
        # a slot's new stem depends only on (mixture, SED, class, stem): compute each distinct
        # one once (the builder refines many queries of one soundscape, sharing stems)
        first = _Separator._first_equal(mixture, sed)
        flat = stems.reshape(b * s, t)
        reps: dict[tuple, list[int]] = {}
        slot_of, todo = [], []
        for r in active:
            key = (first[r // s], int(q[r].argmax()))
            hit = next((j for j in reps.get(key, []) if torch.equal(flat[todo[j]], flat[r])),
                       None)
            if hit is None:
                hit = len(todo)
                todo.append(r)
                reps.setdefault(key, []).append(hit)
            slot_of.append(hit)
        rows = torch.tensor(todo, dtype=torch.long)
        item = rows // s
        scale = mixture[:, 0].float().pow(2).mean(-1).add(1e-10).sqrt()[item]       # (n,)
        tp = _padded_length(t, self.hop, self.n_fft)
        pad = lambda x: F.pad(x / scale[:, None], (0, tp - t))  # noqa: E731
        w = _stft(pad(mixture[item, 0].float()), self.n_fft, self.hop, self.window)
        st = _stft(pad(flat[rows].float()), self.n_fft, self.hop, self.window)
        n_frames = w.shape[-1]
        # the slot class's SED track at each STFT frame (frame k at sample k·hop)
        cls = q[rows].argmax(-1)
        track = sed.float()[item, :, :].gather(2, cls[:, None, None].expand(-1, sed.shape[1], 1))
        at = (torch.arange(n_frames, device=w.device) * self.hop // SED_HOP).clamp_max(
            sed.shape[1] - 1)
        guide = track[:, at, 0].unsqueeze(1)                                       # (n, 1, N)
        feats = torch.cat([torch.log(w.abs().pow(2) + 1e-6), torch.log(st.abs().pow(2) + 1e-6),
                           guide], dim=1)
        h, cond = self.inp(feats), self.embed(q[rows])
        for block in self.blocks:
            h = block(h, cond)
        g, m = self.gains(h).chunk(2, dim=1)
        est = 2 * torch.sigmoid(g) * st + torch.tanh(m) * w
        wav = torch.istft(est, self.n_fft, self.hop, window=self.window, center=True,
                          length=tp)[:, :t] * scale[:, None]
        out[torch.tensor(active, dtype=torch.long)] = wav[torch.tensor(slot_of,
                                                                       dtype=torch.long)]
        return out.reshape(b, s, t)

    def forward(self, batch: dict) -> dict:
        stems = batch["stems"]
        wav = self.refine(batch["mixture"], batch["label_vector"],
                          stems.reshape(stems.shape[0], stems.shape[1], stems.shape[-1]),
                          batch["sed"])
        return {"waveform": wav.unsqueeze(2)}
