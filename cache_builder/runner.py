"""Batched inference: read soundscapes, tag, separate every closure key, re-tag the stems.

Conventions:
    * Audio is read by torch ``DataLoader`` workers with soundfile as float32; every header
      (rate, channels, length) is checked up front in the main process, so a bad file fails
      before any model runs, with its path.
    * Separator batches are formed across soundscapes: items are (soundscape, query) pairs of
      one chunk, grouped by length, ``batch_size`` per forward. Each stem is re-tagged in the
      same step and reduced at once to ``energy_db`` and ``snr_db``: stems are never kept
      beyond their batch.
    * ``energy_db = 10·log10(Σ stem² / Σ mix0²)`` with float64 sums (``-inf`` for an all-zero
      stem); ``snr_db`` / ``snr_mix_db`` are `casdri.snr_db` on the float32 stems, oracle
      targets and mixture channel 0.
    * Float32 by default; ``amp`` (an explicit choice, it changes the numbers) autocasts.
"""
from __future__ import annotations

import ctypes
import signal
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from casdri._cli import lazy_import
from casdri.errors import AudioFileError, FolderLayoutError
from casdri.folders import check_header, read_audio, scan_targets
from casdri.layout import ORACLE_DIR, SOUNDSCAPE_DIR, WAV
from casdri.metric import snr_db

from .closure import query_closure
from .soundscapes.metadata import find_metadata, read_split_tags
from .system import System, import_torch

__all__ = ["SoundscapeFile", "Soundscape", "StemInfo", "FolderLayout", "resolve_folder",
           "scan_soundscapes", "load_soundscape", "iter_soundscapes", "energy_db",
           "separate_items", "tag_soundscapes", "sed_soundscapes", "ChunkResult", "run_chunk"]



# ----------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FolderLayout:
    """Where the audio of a build or live run is.

    Attributes:
        soundscapes: folder of ``<name>.wav`` mixtures.
        oracle: oracle-target folder, or ``None``.
        metadata: the split folder's ``metadata.parquet`` (else ``.csv``), or ``None``
            (`cache_builder.soundscapes.metadata`).
        split_tags: soundscape name → split (or fold) tag from the metadata, or ``None``.
    """

    soundscapes: Path
    oracle: Optional[Path]
    metadata: Optional[Path] = None
    split_tags: Optional[dict] = None


def resolve_folder(soundscapes: Union[str, Path], oracle: Union[str, Path, None, bool] = None,
                   ) -> FolderLayout:
    """Accept a folder of wavs or a split folder as the generator writes it.

    A **split folder** (``DIR/soundscape/`` present and no ``DIR/*.wav``) reads the mixtures
    from ``DIR/soundscape``; with ``oracle=None`` it also takes ``DIR/oracle_target`` when
    that exists (``oracle=False``: no oracle whatever the layout). The split tags come from
    ``metadata.parquet`` (else ``metadata.csv``) of the split folder (also found next to a
    ``soundscape/`` folder given directly): column ``split`` (else ``fold``) per row of
    column ``soundscape``; a metadata file without those columns is ignored.

    Raises:
        FolderLayoutError: the metadata gives one soundscape two tags, or cannot be read.
    """
    root = Path(soundscapes)
    sdir, split_dir = root, None
    if root.is_dir() and (root / SOUNDSCAPE_DIR).is_dir() and not any(root.glob(f"*{WAV}")):
        sdir, split_dir = root / SOUNDSCAPE_DIR, root
        if oracle is None and (root / ORACLE_DIR).is_dir():
            oracle = root / ORACLE_DIR
    elif root.name == SOUNDSCAPE_DIR:
        split_dir = root.parent
    odir = None if oracle is None or oracle is False else Path(oracle)
    meta = None if split_dir is None else find_metadata(split_dir)
    tags = read_split_tags(meta) if meta is not None else None
    return FolderLayout(sdir, odir, meta, tags)


@dataclass(frozen=True)
class SoundscapeFile:
    """One soundscape on disk.

    Attributes:
        name: file stem (``soundscape_0001``).
        path: the 4-channel wav.
        n_samples: frames.
        oracle: ``(label, path)`` of each oracle target, by target index; ``None`` when no
            oracle folder was given (evaluation set), ``()`` for a zero-target clip.
    """

    name: str
    path: Path
    n_samples: int
    oracle: Optional[tuple[tuple[str, Path], ...]] = None


def scan_soundscapes(soundscape_dir: Union[str, Path], oracle_dir: Union[str, Path, None],
                     system_spec, names: Optional[Sequence[str]] = None) -> list[SoundscapeFile]:
    """List and check the soundscapes of a folder (sorted by name), headers only.

    Names are matched by `casdri.folders.scan_targets` (the one DCASE folder reader).

    Raises:
        FolderLayoutError: missing folder, no wav, an oracle file naming no soundscape.
        AudioFileError: a wrong rate, channel count or length (the path is named).
    """
    if not Path(soundscape_dir).is_dir():
        raise FolderLayoutError(f"soundscape folder {soundscape_dir} does not exist")
    scanned = scan_targets(soundscape_dir, oracle_dir, system_spec.label_set)
    if names is not None:
        wanted = set(names)
        scanned = [f for f in scanned if f.name in wanted]
    if not scanned:
        raise FolderLayoutError(f"{soundscape_dir}: no .wav soundscape found")
    rate, expects = system_spec.sample_rate_hz, "the system expects"
    out = []
    for f in scanned:
        n = check_header(f.mixture_path, sample_rate_hz=rate,
                         n_channels=system_spec.n_channels, expects=expects)
        for t in f.refs:
            check_header(t.path, sample_rate_hz=rate, n_channels=1, n_samples=n,
                         expects=expects)
        orc = None if oracle_dir is None else tuple((t.label, t.path) for t in f.refs)
        out.append(SoundscapeFile(f.name, f.mixture_path, n, orc))
    return out


@dataclass
class Soundscape:
    """One soundscape in memory: ``mixture (n_channels, T)`` float32, oracle ``(n_ref, T)``."""

    name: str
    mixture: np.ndarray
    oracle_labels: Optional[list[str]] = None
    oracle: Optional[np.ndarray] = None

    @property
    def has_oracle(self) -> bool:
        return self.oracle_labels is not None


def load_soundscape(f: SoundscapeFile) -> Soundscape:
    """Read one soundscape (and its oracle targets) as float32 with `casdri.folders.read_audio`.

    Raises:
        AudioFileError: an unreadable or truncated file, NaN/Inf samples.
    """
    mix = read_audio(f.path)
    if f.oracle is None:
        return Soundscape(f.name, mix)
    refs = np.zeros((len(f.oracle), mix.shape[1]), np.float32)
    for i, (_, p) in enumerate(f.oracle):
        refs[i] = read_audio(p)[0]
    return Soundscape(f.name, mix, [lab for lab, _ in f.oracle], refs)


class _Files:
    """Map-style dataset for the DataLoader (errors travel as values, raised in main)."""

    def __init__(self, files: Sequence[SoundscapeFile]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return load_soundscape(self.files[i])
        except AudioFileError as e:
            return e


def _first(batch):
    return batch[0]


def _die_with_parent(_worker_id: int) -> None:
    """Linux: a reader dies with the build process (a killed build leaves no orphan workers
    blocked on a full pipe)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PDEATHSIG
    except (OSError, AttributeError):
        pass


def iter_soundscapes(files: Sequence[SoundscapeFile], jobs: int = 0) -> Iterator[Soundscape]:
    """Soundscapes in ``files`` order, read by ``jobs`` DataLoader workers (0 = inline)."""
    if jobs <= 0:
        for f in files:
            yield load_soundscape(f)
        return
    data = lazy_import("torch.utils.data", extra="builder")
    loader = data.DataLoader(_Files(files), batch_size=1, shuffle=False, num_workers=jobs,
                             collate_fn=_first, prefetch_factor=4, persistent_workers=False,
                             worker_init_fn=_die_with_parent)
    for item in loader:
        if isinstance(item, Exception):
            raise item
        yield item


# ----------------------------------------------------------------------------- features


def energy_db(stems: np.ndarray, mix0: np.ndarray) -> np.ndarray:
    """``10·log10(Σ stem² / Σ mix0²)`` per row, float64 sums; ``(n,)`` float64 dB
    (``-inf`` for an all-zero stem, ``+inf`` for a stem of an all-zero mixture)."""
    num = np.einsum("ij,ij->i", stems, stems, dtype=np.float64)
    den = float(np.einsum("i,i->", mix0, mix0, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * np.log10(num / den)
    out[num == 0] = -np.inf  # an all-zero stem, even of an all-zero mixture
    return out


@dataclass
class StemInfo:
    """One query's stems after one stage.

    Attributes:
        query: canonical query; row ``i`` is the stem for ``query[i]``.
        energy_db: ``(n_q,)`` float64 dB.
        retag: ``(n_q, n_tracks, C + 1)`` float32 retagger softmax of each stem (as cached).
        snr_db: ``(n_q, n_ref)`` float64 against every oracle target (``None`` without oracle).
        waveforms: ``(n_q, T)`` float32 stems, kept only when asked (live apply).
    """

    query: tuple[int, ...]
    energy_db: np.ndarray
    retag: np.ndarray
    snr_db: Optional[np.ndarray] = None
    waveforms: Optional[np.ndarray] = None


def separate_items(system: System, separator: str, mixtures: Sequence[np.ndarray],
                   queries: Sequence[tuple[int, ...]], refs: Sequence[Optional[np.ndarray]],
                   keep_waveforms: bool = False, where: str = "",
                   seds: Optional[Sequence[np.ndarray]] = None) -> list[list[StemInfo]]:
    """One separator forward (plus stages) on a batch of (mixture, query) items.

    Args:
        system: the loaded `System`.
        separator: separator name.
        mixtures: ``B`` ``(n_channels, T)`` float32 arrays of one length.
        queries: ``B`` canonical queries.
        refs: ``B`` oracle arrays ``(n_ref, T)`` or ``None``.
        keep_waveforms: keep the float32 stems in each `StemInfo` (live apply).
        where: context appended to error messages.
        seds: ``B`` ``(n_frames, C)`` float16 SED of each item's mixture
            (`sed_soundscapes`), or None (a system without SED guidance).

    Returns:
        ``[item][stage]`` `StemInfo` (stage 0 = separator output; each stage's stems
        re-tagged by that stage's retagger, `System.stage_retagger`).
    """
    torch = import_torch()
    mix = torch.from_numpy(np.stack(mixtures))
    sed = None if seds is None else torch.from_numpy(np.stack(seds).astype(np.float32))
    outs = system.separate(separator, mix, queries, where=where, sed=sed)
    result: list[list[StemInfo]] = [[] for _ in queries]
    for k, stage_out in enumerate(outs):
        rows = [(b, i) for b, q in enumerate(queries) for i in range(len(q))]
        stems_t = stage_out[[b for b, _ in rows], [i for _, i in rows]]  # (N, 1, T)
        retag = system.retag(stems_t, where=where,
                             tagger=system.stage_retagger(k)).astype(np.float32)
        stems = stems_t[:, 0].float().cpu().numpy()
        start = 0
        for b, q in enumerate(queries):
            s = np.ascontiguousarray(stems[start:start + len(q)])
            mix0 = mixtures[b][0]
            ref = refs[b]
            snr = None
            if ref is not None:
                snr = snr_db(s, ref) if len(ref) else np.zeros((len(q), 0))
            result[b].append(StemInfo(tuple(q), energy_db(s, mix0), retag[start:start + len(q)],
                                      snr, s if keep_waveforms else None))
            start += len(q)
    return result


def tag_soundscapes(system: System, scs: Sequence[Soundscape],
                    batch_size: int) -> list[dict[str, np.ndarray]]:
    """Every tagger on every soundscape, batched by length: ``[sc]{tagger: (K, C+1)}``
    float32 (the values the cache stores and every policy sees)."""
    torch = import_torch()
    out: list[dict[str, np.ndarray]] = [{} for _ in scs]
    for idx in _length_batches([s.mixture.shape[1] for s in scs], batch_size):
        x = torch.from_numpy(np.stack([scs[i].mixture for i in idx]))
        names = ", ".join(scs[i].name for i in idx[:3])
        for name in system.spec.taggers:
            probs = system.tag(name, x, where=f" on {names}")
            for j, i in enumerate(idx):
                out[i][name] = probs[j].astype(np.float32)
    return out


def sed_soundscapes(system: System, scs: Sequence[Soundscape],
                    batch_size: int) -> Optional[list[np.ndarray]]:
    """The SED model on every soundscape, batched by length: ``[sc] (n_frames, C)`` float16
    (the values the cache stores); None when the system has no SED model."""
    torch = import_torch()
    if system.sed is None:
        return None
    out: list = [None] * len(scs)
    for idx in _length_batches([s.mixture.shape[1] for s in scs], batch_size):
        x = torch.from_numpy(np.stack([scs[i].mixture for i in idx]))
        probs = system.detect(x, where=f" on {', '.join(scs[i].name for i in idx[:3])}")
        for j, i in enumerate(idx):
            out[i] = probs[j]
    return out


def _length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(lengths):
        groups[n].append(i)
    return [g[s:s + batch_size] for n in sorted(groups) for g in [groups[n]]
            for s in range(0, len(g), batch_size)]


# ----------------------------------------------------------------------------- chunks


@dataclass
class ChunkResult:
    """Everything a chunk of soundscapes contributes to the cache (plain arrays).

    Attributes:
        names, n_samples: per soundscape of the chunk.
        oracle_labels: per soundscape, oracle label names (``None`` without oracle).
        snr_mix_db: per soundscape, ``(n_ref,)`` mixture-channel-0 SNR (``None``: no oracle).
        tagger_probs: ``[sc]{tagger: (K, C+1)}`` float32.
        keys: ``[sc]`` closure queries.
        stems: ``{(sc_index, separator, stage_index, query): StemInfo}``.
        sed: ``[sc] (n_frames, C)`` float16 SED, or None (no SED model).
    """

    names: list[str]
    n_samples: list[int]
    oracle_labels: list[Optional[list[str]]]
    snr_mix_db: list[Optional[np.ndarray]]
    tagger_probs: list[dict[str, np.ndarray]]
    keys: list[list[tuple[int, ...]]]
    stems: dict = field(default_factory=dict)
    sed: Optional[list] = None


def run_chunk(system: System, scs: Sequence[Soundscape], top_n: int, batch_size: int,
              tag_batch_size: int, bar=None, sep_total=None, journal=None) -> ChunkResult:
    """Tag, build the closure, separate each (soundscape, separator, key) exactly once.

    With a `cache_builder._journal.BatchJournal`, every finished separator batch is journaled
    and a batch already in the journal (a resumed chunk) is read back instead of separated.
    """
    spec = system.spec
    probs = tag_soundscapes(system, scs, tag_batch_size)
    seds = sed_soundscapes(system, scs, tag_batch_size)
    keys, snr_mix = [], []
    max_slots = min(spec.n_slots(ms) for ms in spec.separators.values())
    for s, p in zip(scs, probs):
        oracle = None
        if s.has_oracle:
            oracle = [spec.label_set.index(lab) for lab in s.oracle_labels]
        keys.append(query_closure(p, top_n, spec.n_tracks, oracle, max_slots))
        snr_mix.append(None if s.oracle is None else
                       (snr_db(s.mixture[0], s.oracle)[0] if len(s.oracle) else np.zeros(0)))
    res = ChunkResult([s.name for s in scs], [s.mixture.shape[1] for s in scs],
                      [s.oracle_labels for s in scs], snr_mix, probs, keys, sed=seds)
    items = [(i, q) for i, ks in enumerate(keys) for q in ks]
    if sep_total is not None:
        sep_total(len(items) * len(spec.separators), len(scs))
    batches = [[items[j] for j in b] for b in
               _length_batches([scs[i].mixture.shape[1] for i, _ in items], batch_size)]
    for si, sep in enumerate(spec.separators):
        for bi, batch in enumerate(batches):
            names = sorted({scs[i].name for i, _ in batch})
            item_names, queries = [scs[i].name for i, _ in batch], [q for _, q in batch]
            infos = None if journal is None else journal.load(si, bi, item_names, queries)
            if infos is None:
                infos = separate_items(system, sep, [scs[i].mixture for i, _ in batch],
                                       queries, [scs[i].oracle for i, _ in batch],
                                       where=f" on {', '.join(names[:3])}",
                                       seds=None if seds is None else
                                       [seds[i] for i, _ in batch])
                if journal is not None:
                    journal.save(si, bi, item_names, queries, infos)
            for (i, q), per_stage in zip(batch, infos):
                for st, info in enumerate(per_stage):
                    key = (i, sep, st, q)
                    if key in res.stems:  # never happens: closure keys are unique
                        raise RuntimeError(f"query {q} of {scs[i].name} separated twice")
                    res.stems[key] = info
            if bar is not None:
                bar.update(len(batch))
    return res
