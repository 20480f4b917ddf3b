"""Streaming catalog: the input as a stream of work units, one study at a time, in bounded memory.

A cohort (NLST from the Imaging Data Commons: collection/patient/study/series, about ten million
files) cannot be listed before work starts. The catalog walks the input folder by folder and
reads at most two headers per folder (the first and the last DICOM file by name): when they
agree, the folder is taken as one series (the common layout) without reading the rest; when
they differ, the folder is mixed and every header in it is read to split it by study.
Neighbouring folders of one study form one :class:`Unit`, so that the series-selection rules
(one reconstruction per study) see the whole study. The worker reads every header of its unit.

Memory: the current study's folders, plus one set of visited real folders (to follow links
without loops): a few hundred bytes per folder, never one entry per file.

A unit's ``id`` depends only on where its files are (relative paths), so it is the same in every
run; its ``fingerprint`` (names, sizes, modification times) tells a changed input.

A SeriesInstanceUID seen again in a later, non-neighbouring folder (:func:`link_series`, one
entry per series UID in memory): for the same patient and study it is the same series split
over folders, and the later unit takes in the earlier one's folders (``supersedes`` names it:
the engine records only the whole); for another patient or study it is another series that
shares the UID, and the later unit's series of that UID get their own output folder (``taken``).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

from ..dicom.scan import SNIFF_BYTES, read_header, sniff

log = logging.getLogger("cac_mhub")

#: Folders of one study merged into one unit at most (a study has a handful of series).
MAX_FOLDERS_PER_UNIT = 64


@dataclass(frozen=True)
class Unit:
    """Work for one worker: the files of one study (or of one folder, or the whole input)."""

    id: str
    folders: tuple[str, ...]
    """Folders relative to the input root (``.`` for the root); all their files belong to the
    unit, unless ``files`` names them."""
    files: tuple[str, ...] | None = None
    """Explicit files relative to the root (a mixed folder split by study), else None."""
    recursive: bool = False
    """True for the whole-input unit: every file below ``folders[0]``."""
    study: str = ""
    """StudyInstanceUID of the probe (or a folder-based stand-in); for grouping only."""
    fingerprint: str = ""
    """sha256 of (name, size, mtime) of every file: a changed input changes it."""
    problem: str = ""
    """Set when the unit cannot be worked on (a manifest line naming no folder)."""
    probes: tuple[tuple[str, str], ...] = ()
    """(SeriesInstanceUID, owner: patient and study) of the headers the catalog read."""
    taken: tuple[str, ...] = ()
    """SeriesInstanceUIDs an earlier unit holds for another patient or study."""
    supersedes: tuple[str, ...] = ()
    """Ids of earlier units whose folders this one takes in (a series split over far-apart
    folders): their records are this unit's."""

    @property
    def label(self) -> str:
        """For the log: a folder, never a patient name (folder names are the user's, as given)."""
        first = self.folders[0] if self.folders else "?"
        return first + (f" (+{len(self.folders) - 1} folders)" if len(self.folders) > 1 else "")


@dataclass
class CatalogStats:
    """What the catalog has seen so far (for progress and the log)."""

    folders: int = 0
    files: int = 0
    headers_read: int = 0
    units: int = 0
    mixed_folders: int = 0
    split_series: int = 0
    """Series found again in a later, non-neighbouring folder (its units merged)."""
    shared_uids: int = 0
    """SeriesInstanceUIDs found for two patients or studies."""
    superseded: set[str] = field(default_factory=set)
    """Ids of units a later unit took in (the engine skips them when they have not started)."""
    problems: list[tuple[Path, str]] = field(default_factory=list)
    """Unreadable folders and broken links (reported as ignored, like unreadable files)."""
    done: bool = False


def unit_id(folders: Iterable[str], files: Iterable[str] | None = None, recursive: bool = False) -> str:
    text = "\n".join(sorted(folders)) + "\0" + ("\n".join(sorted(files)) if files is not None else "*")
    text += "\0R" if recursive else ""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:20]


def _fingerprint(entries: Iterable[tuple[str, int, int]]) -> str:
    digest = hashlib.sha256()
    for name, size, mtime in sorted(entries):
        digest.update(f"{name}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:24]


def folder_files(folder: Path, problems: list[tuple[Path, str]] | None = None) -> list[os.DirEntry]:
    """The regular files directly in ``folder`` (links followed), sorted by name; broken links
    are appended to ``problems``."""
    files = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if _is_file(entry):
                    files.append(entry)
                elif problems is not None and entry.is_symlink() and not os.path.exists(entry.path):
                    problems.append((Path(entry.path), "broken symbolic link"))
    except OSError:
        return []
    return sorted(files, key=lambda e: e.name)


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _stat(entry: os.DirEntry) -> tuple[int, int]:
    try:
        st = entry.stat()
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, 0


def _probe(path: Path) -> tuple[str, str, str] | None:
    """(study UID, series UID, patient ID) from a header, or None when the file is not usable DICOM."""
    try:
        with open(path, "rb") as handle:
            if sniff(handle.read(SNIFF_BYTES)):
                return None
    except OSError:
        return None
    ds, _ = read_header(path)
    if ds is None:
        return None
    study, series, patient = (_text(ds, k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "PatientID"))
    return study, series, patient


def _text(ds: object, keyword: str) -> str:
    try:
        return str(ds.get(keyword, "") or "").strip()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a malformed value identifies nothing
        return ""


def _owner(found: tuple[str, str, str]) -> str:
    """Patient and study of a probe, hashed (one short string per series in memory)."""
    return hashlib.sha256(f"{found[2]}\0{found[0]}".encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _probes(found: Iterable[tuple[str, str, str] | None]) -> tuple[tuple[str, str], ...]:
    return tuple(dict.fromkeys((f[1], _owner(f)) for f in found if f is not None and f[1]))


def _first_probe(paths: Iterable[Path], stats: CatalogStats) -> tuple[str, str, str] | None:
    for path in paths:
        stats.headers_read += 1
        found = _probe(path)
        if found is not None:
            return found
    return None


def walk_folders(root: Path, exclude: Iterable[Path] = (),
                 problems: list[tuple[Path, str]] | None = None) -> Iterator[Path]:
    """Every folder below ``root`` (itself first), sorted, links followed once, ``exclude`` left
    out; folders that cannot be read are appended to ``problems``."""
    excluded = {Path(p).resolve() for p in exclude}
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen or folder.resolve() in excluded:
            continue
        seen.add(ident)
        try:
            with os.scandir(folder) as entries:
                subs = sorted(e.name for e in entries if not e.name.startswith(".") and _is_dir(e))
        except OSError as error:
            if problems is not None:
                problems.append((folder, f"unreadable folder ({type(error).__name__})"))
            continue
        yield folder
        stack.extend(folder / name for name in reversed(subs))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _folder_units(root: Path, folder: Path, stats: CatalogStats) -> list[tuple[str, Unit]]:
    """The units of one folder's own files: one (study, unit) normally, several when mixed."""
    entries = folder_files(folder, stats.problems)
    if not entries:
        return []
    stats.folders += 1
    stats.files += len(entries)
    rel = os.path.relpath(folder, root)
    fingerprint = _fingerprint((e.name, *_stat(e)) for e in entries)
    paths = [Path(e.path) for e in entries]
    first = _first_probe(paths, stats)
    last = _first_probe(reversed(paths), stats) if first is not None and len(paths) > 1 else first
    if first is None:  # no DICOM here: the worker reports the files as ignored
        return [(f"folder:{rel}", Unit(unit_id([rel]), (rel,), study="", fingerprint=fingerprint))]
    if first == last:
        study = first[0] or f"folder:{os.path.dirname(rel)}"
        return [(study, Unit(unit_id([rel]), (rel,), study=study, fingerprint=fingerprint, probes=_probes([first])))]
    # mixed folder: read every header, split by study
    stats.mixed_folders += 1
    by_study: dict[str, list[os.DirEntry]] = {}
    found_by_study: dict[str, list[tuple[str, str, str] | None]] = {}
    for entry in entries:
        stats.headers_read += 1
        found = _probe(Path(entry.path))
        study = (found[0] if found else "") or f"folder:{os.path.dirname(rel)}"
        by_study.setdefault(study, []).append(entry)
        found_by_study.setdefault(study, []).append(found)
    units = []
    for study, members in by_study.items():
        files = tuple(os.path.join(rel, e.name) if rel != "." else e.name for e in members)
        units.append((study, Unit(unit_id([rel], files), (rel,), files=files, study=study,
                                  fingerprint=_fingerprint((e.name, *_stat(e)) for e in members),
                                  probes=_probes(found_by_study[study]))))
    return units


def _merge(units: list[Unit], root: Path) -> Unit:
    """One unit for neighbouring folders of one study (files listed when a mixed folder's share
    is among them)."""
    if len(units) == 1:
        return units[0]
    folders = tuple(dict.fromkeys(f for u in units for f in u.folders))
    files = None
    if any(u.files is not None for u in units):
        files = tuple(dict.fromkeys(f for u in units for f in (u.files if u.files is not None else _folder_names(root, u))))
    digest = hashlib.sha256("".join(u.fingerprint for u in units).encode()).hexdigest()[:24]
    probes = tuple(dict.fromkeys(p for u in units for p in u.probes))
    return Unit(unit_id(folders, files), folders, files=files, study=units[0].study, fingerprint=digest, probes=probes)


def _folder_names(root: Path, unit: Unit) -> list[str]:
    return [name for folder in unit.folders for name in _names(root, folder)]


def _names(root: Path, folder: str) -> list[str]:
    return [os.path.join(folder, e.name) if folder != "." else e.name for e in folder_files(root / folder)]


def link_series(units: Iterable[Unit], root: Path, stats: CatalogStats) -> Iterator[Unit]:
    """Units as they come, with what earlier units hold of their series (see the module docstring).

    Memory: one entry per SeriesInstanceUID seen (hashes of the UID and of its patient and study,
    and the unit holding it, kept without its probes): about 0.4 KB a series (38 MiB for 100,000).
    """
    owners: dict[int, tuple[int, Unit]] = {}
    successor: dict[str, Unit] = {}
    """Unit id -> the unit that took it in (followed to the latest)."""

    def holder(unit: Unit) -> Unit:
        while unit.id in successor:
            unit = successor[unit.id]
        return unit

    for unit in units:
        earlier: dict[str, Unit] = {}
        taken: set[str] = set()
        for uid, owner in unit.probes:
            held = owners.get(hash(uid))
            if held is None:
                continue
            holding = holder(held[1])
            if holding.id == unit.id:
                continue
            if held[0] == hash(owner):
                earlier[holding.id] = holding
            else:
                taken.add(uid)
        if earlier:
            stats.split_series += 1
            merged = _merge([*earlier.values(), unit], root)
            supersedes = tuple(dict.fromkeys([*earlier, *(i for u in earlier.values() for i in u.supersedes)]))
            stats.superseded.update(earlier)
            log.info("%s holds a series also found in %s: one unit of their folders", unit.label,
                     ", ".join(u.label for u in earlier.values()))
            unit = replace(merged, supersedes=supersedes, taken=tuple(sorted(set(merged.taken) | taken)))
        elif taken:
            unit = replace(unit, taken=tuple(sorted(taken)))
        if taken:
            stats.shared_uids += len(taken)
        slim = replace(unit, probes=())
        for old in earlier:
            successor[old] = slim
        for uid, owner in unit.probes:
            held = owners.get(hash(uid))
            if held is None or held[0] == hash(owner):
                owners[hash(uid)] = (hash(owner), slim)
        yield unit


def iter_units(root: Path, exclude: Iterable[Path] = (), stats: CatalogStats | None = None) -> Iterator[Unit]:
    """Stream the units below ``root``: neighbouring folders of one study form one unit; a series
    found again further on takes in the earlier unit (:func:`link_series`)."""
    stats = stats if stats is not None else CatalogStats()
    yield from link_series(_study_units(Path(root), exclude, stats), Path(root), stats)


def _study_units(root: Path, exclude: Iterable[Path], stats: CatalogStats) -> Iterator[Unit]:
    """Neighbouring folders of one study, one unit each."""
    pending: list[Unit] = []
    current = None
    for folder in walk_folders(root, exclude, stats.problems):
        for study, unit in _folder_units(root, folder, stats):
            if pending and (study != current or len(pending) >= MAX_FOLDERS_PER_UNIT or not unit.study):
                stats.units += 1
                yield _merge(pending, root)
                pending = []
            pending.append(unit)
            current = study
    if pending:
        stats.units += 1
        yield _merge(pending, root)
    stats.done = True


def whole_input_unit(root: Path, exclude: Iterable[Path] = ()) -> Unit:
    """The whole input as one unit: for workflows that match series across the input (rescoring
    a SEG that may lie in any folder)."""
    entries = []
    for folder in walk_folders(Path(root), exclude):
        rel = os.path.relpath(folder, root)
        entries.extend((os.path.join(rel, e.name), *_stat(e)) for e in folder_files(folder))
    return Unit(unit_id(["."], recursive=True), (".",), recursive=True, study="", fingerprint=_fingerprint(entries))


def read_manifest(path: Path, root: Path) -> Iterator[str]:
    """Series folders named by a manifest, one per line (text), or in a CSV column ``folder``
    (or the first column); relative paths are taken from the input root. Blank lines and lines
    starting with ``#`` are skipped."""
    with open(path, encoding="utf-8-sig") as handle:
        text_lines = [line.rstrip("\n") for line in handle]  # a manifest is small: one line a folder
    if Path(path).suffix.lower() == ".csv":
        reader = csv.reader(text_lines)
        header = next(reader, [])
        column = next((i for i, name in enumerate(header) if name.strip().lower() in ("folder", "path", "series_folder")), None)
        if column is None:  # no header row: the first column holds folders
            column = 0
            if header and header[0].strip() and not header[0].startswith("#"):
                yield header[0].strip()
        for row in reader:
            if len(row) > column and row[column].strip() and not row[column].startswith("#"):
                yield row[column].strip()
        return
    for line in text_lines:
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def manifest_units(path: Path, root: Path, stats: CatalogStats | None = None) -> Iterator[Unit]:
    """One unit per folder the manifest names (split by study when a folder is mixed); series
    found in two named folders are linked as in :func:`iter_units`."""
    stats = stats if stats is not None else CatalogStats()
    yield from link_series(_manifest_units(path, Path(root), stats), Path(root), stats)


def _manifest_units(path: Path, root: Path, stats: CatalogStats) -> Iterator[Unit]:
    for entry in read_manifest(path, root):
        folder = (root / entry) if not os.path.isabs(entry) else Path(entry)
        rel = os.path.relpath(folder, root)
        if not folder.is_dir():
            stats.units += 1
            yield Unit(unit_id([rel]), (rel,), problem=f"manifest names no folder: {entry}")
            continue
        units = _folder_units(root, folder, stats)
        if not units:
            stats.units += 1
            yield Unit(unit_id([rel]), (rel,), problem=f"manifest folder holds no files: {entry}")
        for _, unit in units:
            stats.units += 1
            yield unit
    stats.done = True


def in_shard(unit: Unit, shard: tuple[int, int] | None) -> bool:
    """Whether ``unit`` belongs to shard ``(index, count)``: by its id, so that the shards of
    one input are disjoint and together the whole, with no coordination between them."""
    if shard is None:
        return True
    index, count = shard
    return int(unit.id[:8], 16) % count == index


def parse_shard(text: str) -> tuple[int, int]:
    """``'i/N'`` with 0 <= i < N (Slurm's SLURM_ARRAY_TASK_ID counts from 0 with --array=0-N-1)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: need 0 <= i < N")
    return index, count


def unit_paths(unit: Unit, root: Path) -> list[Path] | None:
    """The files of ``unit`` (absolute), or None for the whole input (scanned recursively)."""
    if unit.recursive:
        return None
    if unit.files is not None:
        return [root / f for f in unit.files]
    paths: list[Path] = []
    for folder in unit.folders:
        paths.extend(Path(e.path) for e in folder_files(root / folder))
    return paths
