"""`build_cache`: a resumable, shardable cache build; `validate_cache` and `cache_info`.

Conventions:
    * **One cache, one system.** The cache metadata holds what every build into the folder
      must share: label set, models and checkpoint SHA-256, closure (``top_n``, oracle or
      not), precision. A folder holding another cache is refused (`CacheError`).
    * **Folders.** ``soundscapes`` is a folder of ``<name>.wav`` or a split folder as the
      generator writes it (``soundscape/``, ``oracle_target/``, ``metadata.parquet``/``.csv``;
      `cache_builder.runner.resolve_folder`): then the oracle targets are used unless
      ``oracle=False``.
    * **Splits.** Each build adds the soundscapes of one folder under a split (fold) tag,
      stored per soundscape in the ``split`` column of the cache's soundscapes table and in
      the build manifest: ``split`` when given, else the single ``split`` (or ``fold``) value
      the folder's metadata gives its soundscapes, else ``dev``. Several splits (distinct
      soundscape names) can share a cache. A split is tied to its soundscape list.
    * **Provenance.** When the folder's metadata names each soundscape's ``room`` and
      ``recording`` ids (`cache_builder.soundscapes.metadata.read_provenance`, as the
      generator writes them), they go to the ``room`` and ``recordings`` columns of the
      cache's soundscapes table (grouped search folds); otherwise those stay null (unknown).
    * **Shards.** The soundscapes of the folder, sorted by name, go round robin to shards:
      shard ``i`` of ``n`` takes ``sorted_names[i::n]``. Shards may write into one cache
      folder at the same time (part names differ, the metadata is identical) or into separate
      folders merged afterwards by copying ``soundscapes/``, ``tagger/``, ``separations/``
      and ``_build/``; `validate_cache` checks the merged cache.
    * **Chunks and parts.** A shard's soundscapes are cut into chunks of ``chunk_size``; chunk
      ``j`` becomes part ``<split>-<i>of<n>-<j>`` of every table (atomic files, written by
      `casdri.cache.CacheWriter`, soundscapes last). After all tables of a chunk are on disk
      the chunk is added to the shard's manifest ``_build/<split>.shard-<i>of<n>.json`` (temp
      file, then ``os.replace``), with the forward passes it took; the manifest also records
      the split's full soundscape list hash.
    * **Resume.** The same command on the same folder skips every chunk in the manifest,
      removes parts of a chunk that is not (killed between two tables) and temp files a kill
      left behind, and finishes the chunk in flight from its batch journal
      (`cache_builder._journal`): every separator batch finished before the kill is read
      back, so at most the batch in flight is separated again (plus the chunk's tagging, one
      pass per soundscape and tagger). No reader ever sees a half-written part (parts are
      renamed into place whole).
    * Separator outputs can differ in the last float32 bits with the batch composition (the
      kernels a backend picks depend on the batch size): shards or a live run agree with a
      single build to ~1e-6 relative, not bit for bit. Tagger outputs are bit-identical
      (``tag_batch_size=1``).
    * Forward passes are counted per kind (tagger, separator, stage, retag) and reported per
      soundscape; no (soundscape, separator, query) is separated twice.
"""
from __future__ import annotations

import errno
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from tqdm.auto import tqdm

from casdri import schema as S
from casdri._io import atomic_write_text
from casdri.errors import CacheError, FolderLayoutError, InputError

from . import _cachewrite as cw
from ._cachewrite import PROGRESS_DIR, names_sha256, read_manifests
from .closure import CLOSURE_RULE, QUERY_ORDER_RULE
from ._journal import BatchJournal
from .runner import FolderLayout, iter_soundscapes, resolve_folder, run_chunk, scan_soundscapes
from .soundscapes.metadata import read_provenance
from .system import System, default_batch_size, import_torch, load_system, set_threads

__all__ = ["build_cache", "BuildReport", "validate_cache", "cache_info", "shard_names",
           "split_tag", "provenance_of", "PROGRESS_DIR", "RUN_SETTINGS"]

#: settings that change the separator outputs (batch composition picks other kernels, up to
#: 1.4e-3 dB, issue 13): recorded in the shard's manifest, a resume must use the same
RUN_SETTINGS = ("device", "threads", "batch_size", "tag_batch_size")
#: ``_build/journal/<part>/``: finished separator batches of the chunk in flight
JOURNAL_DIR = "journal"
_SPLIT = re.compile(r"^[A-Za-z0-9_.=]+$")


@dataclass
class BuildReport:
    """What a build did.

    Attributes:
        out: cache folder.
        shard: ``(i, n)``.
        n_soundscapes: soundscapes of this shard; n_built: computed by this call;
        n_skipped: already in complete parts (resume).
        parts_written: part names written by this call.
        passes: forward passes by kind (items: soundscapes, queries or stems).
        calls: batched forward calls by kind.
        seconds: wall time.
        split: the split tag recorded; oracle: the oracle folder used (``None``: none).
    """

    out: Path
    shard: tuple[int, int]
    n_soundscapes: int
    n_built: int
    n_skipped: int
    parts_written: list[str] = field(default_factory=list)
    passes: dict = field(default_factory=dict)
    calls: dict = field(default_factory=dict)
    n_queries: int = 0
    seconds: float = 0.0
    split: str = ""
    oracle: Optional[Path] = None

    def per_soundscape(self) -> dict[str, float]:
        """Forward passes per built soundscape, by kind."""
        return {k: v / self.n_built for k, v in self.passes.items()} if self.n_built else {}

    def summary(self) -> str:
        i, n = self.shard
        rate = self.n_built / self.seconds if self.seconds > 0 else float("nan")
        per = ", ".join(f"{k} {v:.1f}" for k, v in self.per_soundscape().items())
        orc = f"oracle {self.oracle}" if self.oracle is not None else "no oracle"
        return (f"{self.out} shard {i}/{n} split {self.split!r} ({orc}): built "
                f"{self.n_built}, skipped {self.n_skipped} of "
                f"{self.n_soundscapes} soundscapes in {self.seconds:.1f} s "
                f"({rate:.2f} soundscapes/s); {len(self.parts_written)} parts; "
                f"passes per soundscape: {per or '-'}")


def shard_names(names: Sequence[str], shard: tuple[int, int]) -> list[str]:
    """Names of shard ``(i, n)``: ``sorted(names)[i::n]``."""
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise InputError(f"shard {i}/{n}: need 0 <= i < n (e.g. --shard 0/4 .. 3/4)")
    return sorted(names)[i::n]


def _part_name(split: str, shard: tuple[int, int], chunk: int) -> str:
    return f"{_part_prefix(split, shard)}{chunk:05d}"


def _part_prefix(split: str, shard: tuple[int, int]) -> str:
    return f"{split}-{shard[0]:03d}of{shard[1]:03d}-"


def split_tag(layout: FolderLayout, names: Sequence[str], split: Optional[str]) -> str:
    """The split tag of a build (module conventions).

    Raises:
        FolderLayoutError: the metadata lacks some soundscapes or gives them several tags.
    """
    if split is not None:
        return split
    if layout.split_tags is None:
        return "dev"
    missing = [n for n in names if n not in layout.split_tags]
    if missing:
        raise FolderLayoutError(f"{layout.metadata}: no row for soundscapes {missing[:3]} of "
                                f"{layout.soundscapes}; pass --split NAME")
    tags = sorted({layout.split_tags[n] for n in names})
    if len(tags) > 1:
        raise FolderLayoutError(
            f"{layout.metadata}: the soundscapes of {layout.soundscapes} have {len(tags)} "
            f"split tags {tags[:5]}; a build adds one split: build each split from a folder "
            "of its soundscapes, or pass --split NAME")
    return tags[0]


def provenance_of(layout: FolderLayout, names: Sequence[str]
                  ) -> Optional[dict[str, tuple[str, list[str]]]]:
    """Room and recording ids of ``names`` from the folder's metadata (module conventions).

    Returns:
        soundscape name → ``(room, recordings)``, or ``None`` when the folder has no metadata
        or its metadata lacks the ``room``/``recording`` columns (another generator).

    Raises:
        FolderLayoutError: the metadata names rooms but has no row for some of ``names``
            (it describes another folder).
    """
    provenance = read_provenance(layout.metadata, required=False)
    if provenance is None:
        return None
    missing = [n for n in names if n not in provenance]
    if missing:
        raise FolderLayoutError(
            f"{layout.metadata}: no room/recording row for soundscapes {missing[:3]} of "
            f"{layout.soundscapes} ({len(missing)} of {len(names)}); the metadata describes "
            "another folder: generate the split again, or remove the soundscapes it does not "
            "list")
    return provenance


def _remove_stale_temps(out: Path, split: str, shard: tuple[int, int], manifest: Path) -> None:
    """Temp files a killed build of this shard left (never read: parts are renamed whole)."""
    for table in S.TABLES:
        for f in (out / table).glob(f".part-{_part_prefix(split, shard)}*.parquet.tmp-*"):
            f.unlink(missing_ok=True)
    for f in manifest.parent.glob(f".{manifest.name}.*tmp*"):
        f.unlink(missing_ok=True)


def _atomic_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str))


def _read_manifest(path: Path) -> dict:
    try:
        old = json.loads(path.read_text())
        if not isinstance(old, dict):
            raise ValueError(f"expected a JSON object, got {type(old).__name__}")
        return old
    except (OSError, ValueError) as e:
        raise CacheError(
            f"{path}: unreadable build manifest ({type(e).__name__}: {e}); delete it and rerun "
            "the same command: the chunks of this shard are then rebuilt (the other shards "
            "are kept)") from None


def run_settings(system: System, batch_size: int, tag_batch_size: int) -> dict:
    """The `RUN_SETTINGS` of a build: device, torch threads (CPU), batch sizes."""
    torch = import_torch()
    dev = system.device
    return {"device": str(dev),
            "threads": torch.get_num_threads() if dev.type == "cpu" else None,
            "batch_size": int(batch_size), "tag_batch_size": int(tag_batch_size)}


_FLAG = {"device": "--device", "threads": "--threads", "batch_size": "--batch-size",
         "tag_batch_size": "--tag-batch-size"}


def _manifest(out: Path, split: str, shard: tuple[int, int], chunk_size: int, cache_id: str,
              all_names: list[str], names: list[str], soundscapes,
              settings: dict) -> tuple[Path, dict]:
    """This shard's manifest (resumed if present), after checking the other builds."""
    sha = names_sha256(all_names)
    mine = set(all_names)
    manifests, _ = read_manifests(out)
    for m in manifests:
        if m.get("split") == split and m.get("names_sha256") != sha:
            raise CacheError(
                f"{out}: split {split!r} was built from another soundscape list "
                f"({m.get('n_total')} soundscapes, {m['_file'].name}) than {soundscapes} "
                f"({len(all_names)}); use another --split or --out")
    for m in manifests:
        if m.get("split") != split:
            clash = sorted(mine & set(m.get("names", [])))
            if clash:
                raise CacheError(
                    f"{out}: soundscapes {clash[:3]} are already in split {m.get('split')!r} "
                    "of this cache; give each split distinct names or use another --out")
    path = out / PROGRESS_DIR / f"{split}.shard-{shard[0]:03d}of{shard[1]:03d}.json"
    state = {"split": split, "shard": list(shard), "chunk_size": chunk_size,
             "cache_id": cache_id, "n_total": len(all_names), "names_sha256": sha,
             "names": names, "soundscapes": str(soundscapes), "done": {}, "passes": {},
             "settings": settings}
    if path.exists():
        old = _read_manifest(path)
        if old.get("chunk_size") != chunk_size:
            raise CacheError(
                f"{path}: this shard was started with chunk_size {old.get('chunk_size')}; "
                f"resume with --chunk-size {old.get('chunk_size')} or use another --out")
        was = old.get("settings") or {}
        diff = [k for k in RUN_SETTINGS if k in was and was[k] != settings[k]]
        if diff:
            raise CacheError(
                f"{path}: this shard was started with " + ", ".join(
                    f"{_FLAG[k]} {was[k]}" for k in diff) + " and is resumed with " + ", ".join(
                    f"{_FLAG[k]} {settings[k]}" for k in diff) + "; these change the "
                "separator outputs (up to ~1e-3 dB): resume with the same settings, or build "
                "into another --out")
        state["done"] = old.get("done", {})
        state["passes"] = {k: v for k, v in old.get("passes", {}).items()
                           if k in state["done"]}
    return path, state


def build_cache(system: Union[str, Path, System], soundscapes: Union[str, Path],
                out: Union[str, Path], *, oracle: Union[str, Path, None, bool] = None,
                shard: tuple[int, int] = (0, 1), device: Optional[str] = None,
                batch_size: Optional[int] = None, tag_batch_size: int = 1,
                chunk_size: int = 32, split: Optional[str] = None, top_n: int = 1,
                jobs: int = 0,
                amp: bool = False, threads: Optional[int] = None,
                progress: bool = False) -> BuildReport:
    """Build (or resume) shard ``shard`` of a decision cache.

    Args:
        system: system YAML path, or a loaded `System` (its ``device``/``amp`` are used).
        soundscapes: folder of ``<name>.wav`` 4-channel soundscapes, or a split folder
            (``soundscape/``, ``oracle_target/``, ``metadata.parquet``; module conventions).
        out: cache folder (created; resumed when it holds the same build).
        oracle: folder of ``<name>_<i>_<Label>.wav`` oracle targets; ``None``: the split
            folder's ``oracle_target/`` if any; ``False``: no oracle.
        shard: ``(i, n)``, see module conventions.
        device: torch device (default CUDA when present).
        batch_size: (soundscape, query) items per separator forward; ``None``:
            `cache_builder.system.default_batch_size` of the device (48 on CPU, 8 per GiB of
            GPU memory up to 256). Recorded with the device and the CPU threads in the
            shard's manifest (`RUN_SETTINGS`): a resume with other values is refused, since
            they change the separator outputs in the last bits.
        tag_batch_size: soundscapes per tagger forward. The default 1 makes tagger outputs
            independent of batching (a CPU/GPU kernel may round differently for another batch
            size), so a cache's proposals are bit-identical across shard layouts and to the
            live run; taggers run once per soundscape, so this costs little.
        chunk_size: soundscapes per part file (bounds memory; a resumed chunk is finished from
            its batch journal).
        split: split (fold) tag recorded per soundscape; ``None``: from the folder's
            metadata, else ``dev`` (module conventions).
        top_n: proposals per (tagger, track) in the closure.
        jobs: DataLoader workers reading audio (0 reads in this process).
        amp: mixed precision (changes the numbers; recorded).
        threads: ``torch.set_num_threads`` for this build (CPU); ``None`` keeps torch's.
        progress: tqdm bars with ETA per phase (stderr).

    Returns:
        `BuildReport`.

    Raises:
        CacheError: ``out`` holds a different cache, or cannot be written (disk full: named,
            with the fix); a resume with other `RUN_SETTINGS`; an unreadable manifest.
        SystemConfigError, CheckpointError, ModelOutputError: see `cache_builder.system`
            (an unknown or absent ``device`` too).
        AudioFileError, FolderLayoutError: unreadable or mismatching audio.
    """
    t0 = time.perf_counter()
    if split is not None and not _SPLIT.match(split):
        raise CacheError(f"split name {split!r}: use letters, digits, '_', '.', '=' (it names "
                         "part files)")
    set_threads(threads)
    layout = resolve_folder(soundscapes, oracle)
    sysm = system if isinstance(system, System) else load_system(system, device, amp)
    out = Path(out)
    all_files = scan_soundscapes(layout.soundscapes, layout.oracle, sysm.spec)
    split = split_tag(layout, [f.name for f in all_files], split)
    if not _SPLIT.match(split):
        raise CacheError(f"split tag {split!r} of {layout.metadata}: use letters, digits, "
                         "'_', '.', '=' (it names part files); pass --split NAME")
    provenance = provenance_of(layout, [f.name for f in all_files])
    names = shard_names([f.name for f in all_files], shard)
    by_name = {f.name: f for f in all_files}
    files = [by_name[n] for n in names]
    meta = cw.cache_metadata(sysm, top_n=top_n, has_oracle=layout.oracle is not None,
                             closure_rule=CLOSURE_RULE, query_order=QUERY_ORDER_RULE)
    created = not out.exists()
    cmeta = cw.prepare_folder(out, meta)
    prog_path = None
    try:
        (out / PROGRESS_DIR).mkdir(exist_ok=True)
        if batch_size is None:
            batch_size = default_batch_size(sysm.device)
        prog_path, progress_state = _manifest(out, split, tuple(shard), chunk_size,
                                              meta["cache_id"], [f.name for f in all_files],
                                              names, layout.soundscapes,
                                              run_settings(sysm, batch_size, tag_batch_size))
        progress_state["split_source"] = str(layout.metadata) if layout.split_tags else None
        chunks = [files[s:s + chunk_size] for s in range(0, len(files), chunk_size)]
        todo = [(j, c) for j, c in enumerate(chunks) if _part_name(split, shard, j)
                not in progress_state["done"]]
        _remove_stale_temps(out, split, tuple(shard), prog_path)
        for part in progress_state["done"]:  # a kill between the manifest and clearing the journal
            BatchJournal(out / PROGRESS_DIR / JOURNAL_DIR / part).clear()
        for j, _ in todo:  # parts of a chunk killed between two tables
            cw.remove_part(out, _part_name(split, shard, j))
        report = BuildReport(out, tuple(shard), len(files), 0,
                             len(files) - sum(len(c) for _, c in todo), split=split,
                             oracle=layout.oracle)
        sysm.passes.reset()
        bars = _Bars(progress, sum(len(c) for _, c in todo), len(todo))
        stream = iter_soundscapes([f for _, c in todo for f in c], jobs=jobs)
        try:
            for j, chunk in todo:
                scs = [next(stream) for _ in chunk]
                before = dict(sysm.passes.items)
                part = _part_name(split, shard, j)
                journal = BatchJournal(out / PROGRESS_DIR / JOURNAL_DIR / part)
                journal.remove_temps()
                with _disk_full_named(out, part):
                    res = run_chunk(sysm, scs, top_n, batch_size, tag_batch_size,
                                    bar=bars.sep, sep_total=bars.sep_total, journal=journal)
                    cw.write_chunk(out, part, res, sysm, split, cmeta, provenance)
                    progress_state["done"][part] = [s.name for s in scs]
                    progress_state["passes"][part] = {k: v - before.get(k, 0)
                                                      for k, v in sysm.passes.items.items()
                                                      if v - before.get(k, 0)}
                    _atomic_json(prog_path, progress_state)
                journal.clear()
                report.parts_written.append(part)
                report.n_built += len(scs)
                report.n_queries += sum(len(k) for k in res.keys)
                bars.parts.update(1)
        finally:
            bars.close()
            stream.close()
        report.passes = dict(sysm.passes.items)
        report.calls = dict(sysm.passes.calls)
        report.seconds = time.perf_counter() - t0
        return report
    except Exception:
        # An error before any work leaves no empty cache behind to block the corrected build.
        # Kept: a folder this call did not make, any part, another shard's manifest, a batch
        # journal (resumable work), and everything after an interrupt (no Exception).
        if created and _nothing_but(out, prog_path):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _nothing_but(out: Path, manifest: Optional[Path]) -> bool:
    """True when ``out`` holds no part file and no progress file other than ``manifest``."""
    if any(out.glob("*/part-*.parquet")):
        return False
    return all(p == manifest for p in (out / PROGRESS_DIR).rglob("*") if p.is_file())


class _disk_full_named:
    """Turn "no space left on device" (errno or pyarrow's text) into a `CacheError` naming
    the cache, the part and the fix."""

    def __init__(self, out: Path, part: str):
        self.out, self.part = out, part

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if isinstance(e, OSError) and (getattr(e, "errno", None) == errno.ENOSPC
                                       or "No space left" in str(e)):
            raise CacheError(f"{self.out}: no space left on the device while writing part "
                             f"{self.part!r}; free space (or build into another --out) and "
                             "rerun the same command: it resumes after the last finished "
                             "chunk") from None
        return False


class _Bars:
    """tqdm bars per phase: soundscapes read+tagged, (query × separator) items, parts."""

    def __init__(self, enabled: bool, n_soundscapes: int, n_parts: int):
        kw = dict(disable=not enabled, file=sys.stderr, dynamic_ncols=True, leave=True)
        self.tag = tqdm(total=n_soundscapes, desc="read+tag", unit="sc", position=0, **kw)
        self.sep = tqdm(total=0, desc="separate", unit="query", position=1, **kw)
        self.parts = tqdm(total=n_parts, desc="parts", unit="part", position=2, **kw)
        self._n_soundscapes = n_soundscapes
        self._seen = 0

    def sep_total(self, n_new_items: int, n_new_soundscapes: int) -> None:
        """A chunk was read and tagged: advance ``read+tag``; extrapolate the separation
        total from the queries seen so far (ETA)."""
        self.tag.update(n_new_soundscapes)
        self._seen += n_new_soundscapes
        self._items = getattr(self, "_items", 0) + n_new_items
        est = self._items / max(self._seen, 1) * self._n_soundscapes
        self.sep.total = max(int(round(est)), self._items)
        self.sep.refresh()

    def close(self) -> None:
        for b in (self.tag, self.sep, self.parts):
            b.close()


# ----------------------------------------------------------------------------- checks


def validate_cache(path: Union[str, Path]) -> list[str]:
    """Problems of a (merged) cache; an empty list means valid.

    Checks: metadata readable and consistent with every part; every soundscape of the
    recorded list exactly once; every closure key (recomputed from the cached tagger
    probabilities and oracle labels with the recorded ``top_n``) present for every
    separator and stage, with one row per slot; no unfinished build shard.
    """
    return cw.validate(Path(path))


def cache_info(path: Union[str, Path], allow_incomplete: bool = False) -> dict:
    """Summary of a cache: soundscapes, queries, models (with SHA-256), size on disk.

    Raises:
        CacheError: an incomplete cache unless ``allow_incomplete`` (`casdri.load_cache`).
    """
    return cw.info(Path(path), allow_incomplete)
