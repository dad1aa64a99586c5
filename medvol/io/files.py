"""Files: what kind of image a path is (one list of suffixes for the whole project), listing a folder, atomic
writes (temporary file, fsync, rename) for every file and folder medvol publishes, and the one-line answer to a
write that fails for a reason the user can fix (full disk, no permission)."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NON_IMAGE_SUFFIXES = frozenset(
    {".txt", ".csv", ".tsv", ".json", ".md", ".rst", ".py", ".xml", ".html", ".htm", ".pdf", ".log", ".yaml", ".yml",
     ".zip", ".tar", ".gz", ".npz", ".npy", ".pkl", ".pt", ".ini", ".cfg", ".doc", ".docx", ".xls", ".xlsx", ".sh"}
)
TEMP_PREFIX = ".tmp-"
# a failed read or write the user can fix: full disk or quota, no permission, read-only file system, a file where a
# folder should be (or the other way round, or in the way of a new folder), a name too long
USER_FIXABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                                 errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG})
_ERRNO_HINTS = {errno.ENOSPC: "free some space or choose another output folder, then rerun",
                errno.EDQUOT: "the disk quota is used up: free some space or choose another output folder",
                errno.EACCES: "this user may not use it: fix its permissions or choose another path",
                errno.EPERM: "this user may not use it: fix its permissions or choose another path",
                errno.EROFS: "the file system is read-only: choose another output folder",
                errno.ENOTDIR: "a part of this path is a file, not a folder: choose another output folder",
                errno.EEXIST: "a file is in the way of a folder to create: choose another output folder"}


def image_suffix(path: str | os.PathLike) -> str:
    """Lower-case suffix that knows ``.nii.gz``."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def image_stem(path: str | os.PathLike) -> str:
    """File name without ``.nii.gz`` / ``.nii`` / the last suffix."""
    name = Path(path).name
    suffix = image_suffix(path)
    return name[: -len(suffix)] if suffix else name


def is_image_2d(path: str | os.PathLike) -> bool:
    """True for PNG, JPEG, BMP and TIFF files (by suffix)."""
    return image_suffix(path) in IMAGE_2D_SUFFIXES


def is_nifti(path: str | os.PathLike) -> bool:
    """True for ``.nii`` and ``.nii.gz`` files (by suffix)."""
    return image_suffix(path) in NIFTI_SUFFIXES


def gzip_problem(path: str | os.PathLike, chunk: int = 1 << 22) -> str | None:
    """Decompress a gzip file to its end, which checks its CRC-32 and length trailer (nibabel and most readers never
    do, so a damaged ``.nii.gz`` reads as garbage voxels without an error).

    Args:
        path: a gzip-compressed file.
        chunk: bytes decompressed at a time.

    Returns:
        a sentence saying what is wrong, or None when the file is intact.
    """
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(chunk):
                pass
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as err:
        detail = str(err) or type(err).__name__
        return f"damaged gzip data ({detail}): the file is corrupt or truncated, `gzip -t` fails on it too"
    return None


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def classify_file(path: Path) -> str:
    """``nifti``, ``image2d``, ``dicom`` (a candidate: DICOM suffix, no suffix, or the DICM preamble), ``other``."""
    if path.name.startswith("."):
        return "other"
    suffix = image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in IMAGE_2D_SUFFIXES:
        return "image2d"
    if suffix in DICOM_SUFFIXES or not suffix:
        return "dicom"
    if suffix not in NON_IMAGE_SUFFIXES and _has_dicom_preamble(path):
        return "dicom"
    return "other"


def not_an_image_reason(path: Path) -> str:
    """Why `path` is not used as an image (for a `FileRecord`)."""
    if path.name.startswith("."):
        return "hidden file, not an image"
    suffix = image_suffix(path)
    return f"not an image file ({suffix} file)" if suffix else "not an image file"


def list_files(root: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    """Every file under `root` (recursively, skipping hidden folders and folders of `exclude` inside `root`), sorted."""
    root = root.resolve()
    excluded = [e for e in (Path(x).resolve() for x in exclude) if e != root and e.is_relative_to(root)]
    return sorted(
        p for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])
        and not any(p.resolve().is_relative_to(e) for e in excluded)
    )


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def user_fixable_os_error(error: BaseException) -> OSError | None:
    """The first `OSError` with a `USER_FIXABLE_ERRNOS` code in `error` or its causes (MONAI wraps errors raised in
    bundle config expressions), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in USER_FIXABLE_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def os_error_line(error: OSError, fallback: str | os.PathLike | None = None) -> str:
    """One line for a failed read or write: the path (`fallback` when the error names none), the problem, what to
    do."""
    from medvol.errors import MedvolInputError

    where = error.filename if error.filename is not None else fallback
    problem = error.strerror or str(error)
    hint = _ERRNO_HINTS.get(error.errno)
    # a failed write (not a failed read) published nothing: medvol writes under temporary names and renames
    published = "; nothing was published there" if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else ""
    return str(MedvolInputError(where, f"{problem}{': ' + hint if hint else ''}{published}"))


def _raise_naming(error: OSError, path: Path, temp: Path | None = None) -> None:
    """Raise `error`, as an error naming `path` when it named no file (a full disk fails in write(), which names
    none) or the temporary file `temp` that was to become `path`."""
    if error.filename is not None and (temp is None or Path(error.filename) != temp):
        raise error
    # an OSError raised with a message only has no strerror: keep its message
    raise OSError(error.errno, error.strerror or str(error), str(path)) from error


def _temporary_sibling(path: str | os.PathLike) -> tuple[Path, Path]:
    """`path` and the temporary name beside it that becomes `path`; the folder is created (its failure names it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary name next to `path` for writers that take a file name (nibabel, PIL, pydicom): renamed to `path`
    when the block ends, removed when it fails, so `path` is the old file or the whole new one, never a partial one.

    Args:
        path: the file to (re)write; its folder is created. The temporary name keeps its suffix (``.nii.gz``...).

    Raises:
        OSError: as raised inside the block or by the rename, naming `path` when it named no file.
    """
    path, temp = _temporary_sibling(path)
    try:
        yield temp
        os.replace(temp, path)
    except OSError as err:
        temp.unlink(missing_ok=True)
        _raise_naming(err, path, temp)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder next to `path` to fill: it becomes `path` when the block ends and is removed when it
    fails, so a folder of outputs appears whole or not at all.

    Args:
        path: the folder to publish; it must be absent or empty.

    Raises:
        OSError: as raised inside the block or by the rename, naming `path` when it named no file.
    """
    path, temp = _temporary_sibling(path)
    try:
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        yield temp
        if path.is_dir():
            path.rmdir()
        os.replace(temp, path)
    except OSError as err:
        shutil.rmtree(temp, ignore_errors=True)
        if err.filename is not None and Path(err.filename).is_relative_to(temp):  # name the file it was to become
            raise OSError(err.errno, err.strerror, str(path / Path(err.filename).relative_to(temp))) from err
        _raise_naming(err, path, temp)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(binary_stream)`` on a temporary file next to `path`, fsync it and rename it to `path`: readers
    see the old file or the new one, never a partial one (a crash leaves at most a ``.tmp-<pid>-<name>`` file).

    Args:
        path: the file to (re)write; its folder must exist.
        write: writes the content to the stream it is given.
    """
    path = Path(path)
    temp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        with open(temp, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except OSError as err:
        temp.unlink(missing_ok=True)
        _raise_naming(err, path, temp)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda stream: stream.write(data))


def write_json(path: str | os.PathLike, document, indent: int = 1) -> Path:
    """Write a JSON document atomically, creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(document, indent=indent) + "\n").encode())
    return path
