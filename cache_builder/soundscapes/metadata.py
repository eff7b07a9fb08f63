"""The metadata table of a generated split folder: written by the generator, read by the
builder (split tags, room and recording provenance). Light: no torch, no pyroomacoustics.

Conventions:
    * A split folder holds ``metadata.parquet`` and the same rows as ``metadata.csv``
      (`METADATA_FILES`; the Parquet file is read first); columns `METADATA_COLUMNS`, one row
      per event and one ``role == 'noise'`` row per soundscape (`generate_soundscapes`).
    * Column ``soundscape`` names the soundscape (its file stem); ``split`` (or ``fold``, as
      other generators write it) its split tag; ``room`` its room id (one per soundscape);
      ``recording`` the pool recording (group) id the row's clip comes from; ``role`` is
      ``target``, ``interference`` or `BACKGROUND` (the one background row per soundscape).
    * **Provenance** (`read_provenance`) is the room and the recordings of the soundscape's
      *events* (targets and interferers), as the cache's ``recordings`` column means them:
      the background recordings are left out, since the few noise clips of a split are
      shared by nearly every soundscape (grouping folds by them would join the whole split
      into one group).
    * Tables from other generators are read when they have the columns asked for; a table
      without them gives ``None`` (no split tags, no provenance), never a guess.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import pandas as pd
import pyarrow.parquet as pq

from casdri._io import atomic_path
from casdri.errors import FolderLayoutError, InputError

__all__ = ["METADATA_FILES", "METADATA_COLUMNS", "SPLIT", "SOUNDSCAPE", "ROLE", "ROOM",
           "RECORDING", "BACKGROUND", "SPLIT_COLUMNS", "find_metadata",
           "write_metadata", "read_split_tags", "read_provenance"]

PathLike = Union[str, "os.PathLike[str]"]
#: the metadata files of a split folder, the first one found is read
METADATA_FILES = ("metadata.parquet", "metadata.csv")
#: names of the columns the builder reads
SPLIT, SOUNDSCAPE, ROLE, ROOM, RECORDING = "split", "soundscape", "role", "room", "recording"
#: ``role`` of the background row (its recording is no event's)
BACKGROUND = "noise"
#: columns read as the per-soundscape split tag, first found wins
SPLIT_COLUMNS = (SPLIT, "fold")
#: every column the generator writes, in order
METADATA_COLUMNS = (
    SPLIT, SOUNDSCAPE, "event", ROLE, "label", "source_file", "source_offset_s",
    "onset_s", "duration_s", "azimuth_deg", "elevation_deg", "distance_m", "snr_db",
    "level_dbfs", "rt60_s", "room_x_m", "room_y_m", "room_z_m", "mic_x_m", "mic_y_m",
    "mic_z_m", "oracle_file", "seed", ROOM, RECORDING)


def find_metadata(split_dir: PathLike) -> Optional[Path]:
    """The first of `METADATA_FILES` present in ``split_dir``, or ``None``."""
    return next((Path(split_dir) / f for f in METADATA_FILES
                 if (Path(split_dir) / f).is_file()), None)


def write_metadata(table: pd.DataFrame, split_dir: PathLike) -> None:
    """Write ``table`` as ``metadata.parquet`` and ``metadata.csv`` of ``split_dir``
    (atomic files, `casdri._io.atomic_path`)."""
    for name in METADATA_FILES:
        with atomic_path(Path(split_dir) / name, mkdir=False) as tmp:
            table.to_parquet(tmp, index=False) if name.endswith(".parquet") else \
                table.to_csv(tmp, index=False)


def _read(path: Path, wanted: Sequence[Sequence[str]]) -> Optional[pd.DataFrame]:
    """Columns of ``path``: the first present name of each entry of ``wanted`` (as strings),
    or ``None`` when an entry has none."""
    try:
        names = set(pq.read_schema(path).names if path.suffix == ".parquet" else
                    pd.read_csv(path, nrows=0).columns)
        cols = [next((c for c in options if c in names), None) for options in wanted]
        if None in cols:
            return None
        if path.suffix == ".parquet":
            return pd.read_parquet(path, columns=cols).astype(str)
        return pd.read_csv(path, usecols=cols, dtype=str, keep_default_na=False)[cols]
    except Exception as e:  # noqa: BLE001 - pyarrow/pandas raise many types
        raise FolderLayoutError(f"{path}: cannot read the soundscape metadata "
                                f"({type(e).__name__}: {e}); regenerate it or remove it "
                                "from the split folder") from None


def read_split_tags(metadata: PathLike) -> Optional[dict[str, str]]:
    """Soundscape name → split tag (column ``split``, else ``fold``) of a metadata file.

    Returns:
        The tags, or ``None`` when the file has no ``soundscape`` or split column.

    Raises:
        FolderLayoutError: the file cannot be read, or gives one soundscape two tags.
    """
    path = Path(metadata)
    df = _read(path, [(SOUNDSCAPE,), SPLIT_COLUMNS])
    if df is None:
        return None
    col = df.columns[1]
    df = df.drop_duplicates()
    twice = df[SOUNDSCAPE][df[SOUNDSCAPE].duplicated()].unique().tolist()
    if twice:
        raise FolderLayoutError(f"{path}: soundscapes {twice[:3]} have several {col!r} "
                                "values; fix the metadata (one split per soundscape)")
    return dict(zip(df[SOUNDSCAPE], df[col]))


def read_provenance(metadata: Optional[PathLike], required: bool = True
                    ) -> Optional[dict[str, tuple[str, list[str]]]]:
    """Room id and sorted event recording ids of every soundscape of a generated split
    (module conventions: the background's recording is left out).

    Args:
        metadata: a ``metadata.parquet`` or ``metadata.csv`` written by
            `cache_builder.soundscapes.generate_soundscapes` (``None``: no metadata).
        required: raise when ``metadata`` is ``None`` or lacks the columns; ``False``
            returns ``None`` then (a build of folders from other generators).

    Returns:
        soundscape name → ``(room, recordings)`` (``recordings`` empty for a soundscape of
        background only), or ``None`` (``required=False``).

    Raises:
        InputError: no file, or it lacks the ``soundscape``, ``role``, ``room`` or
            ``recording`` column (metadata of casdri's first generator: generate again), or
            names two rooms for one soundscape.
        FolderLayoutError: the file cannot be read.
    """
    if metadata is None:
        if required:
            raise InputError("read_provenance: no metadata file given")
        return None
    path = Path(metadata)
    need = (SOUNDSCAPE, ROLE, ROOM, RECORDING)
    table = _read(path, [(c,) for c in need])
    if table is None:
        if not required:
            return None
        raise InputError(f"{path}: needs columns {sorted(need)} for the room and recording "
                         "ids; generate the soundscapes again with this casdri")
    out = {}
    for name, rows in table.groupby(SOUNDSCAPE, sort=True):
        rooms = sorted(set(rows[ROOM]))
        if len(rooms) != 1:
            raise InputError(f"{path}: soundscape {name!r} names rooms {rooms}; one expected")
        out[str(name)] = (rooms[0], sorted(set(rows.loc[rows[ROLE] != BACKGROUND, RECORDING])))
    return out
