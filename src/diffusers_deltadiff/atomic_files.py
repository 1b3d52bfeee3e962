"""Files written whole or not at all: the bytes go to a temporary file next to the destination (every write checked,
then flushed to disk), which only then takes the destination's name. A full disk, a failing device or an interrupt
leaves the destination as it was and no partial file. A new file never replaces one that appeared meanwhile (another
run writing into the same folder): it is installed by a hard link, which fails when the name exists.
"""

import contextlib
import errno
import os
import secrets
from pathlib import Path


TMP_PREFIX, TMP_SUFFIX = ".deltadiff-", ".tmp"  # `.deltadiff-<pid>-<random>.tmp`, next to the file it becomes


class AlreadyExists(FileExistsError):
    """The destination exists (made by someone else since the run checked) and may not be replaced."""

    def __init__(self, dest: Path):
        super().__init__(errno.EEXIST, "already exists", str(dest))
        self.dest = Path(dest)

    def __str__(self) -> str:
        return f"{self.dest}: already exists (pass --overwrite to replace it)"


def temporary_path(folder: Path) -> Path:
    """A fresh temporary name in `folder`: short (any legal destination name works) and naming this process."""
    return Path(folder) / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}{TMP_SUFFIX}"


def is_temporary_name(name: str) -> bool:
    return name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)


def temporary_owner(name: str) -> int | None:
    """The process id in a temporary name; `None` for older names without one."""
    owner = name[len(TMP_PREFIX) : -len(TMP_SUFFIX)].split("-")[0]
    return int(owner) if owner.isdigit() else None


def write_whole(fd: int, data) -> None:
    """Write all of `data` to `fd` (short writes continued, every error raised), then flush it to the device."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - os.write raises rather than returning 0 for regular files
            raise OSError(errno.EIO, "short write")
        view = view[written:]
    os.fsync(fd)


def install(tmp: Path, dest: Path, replace: bool):
    """
    Give the complete file `tmp` the name `dest`: with `replace`, by `os.replace`; without, only if `dest` does not
    exist (`AlreadyExists` otherwise), by a hard link. Where the file system has no hard links, the name is claimed
    with an exclusive create first, then replaced.
    """
    if replace:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise AlreadyExists(dest) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        try:
            os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise AlreadyExists(dest) from None
        os.replace(tmp, dest)
        return
    os.unlink(tmp)


def write_file_atomic(dest: Path, data, replace: bool = False):
    """
    Write the bytes `data` as the file `dest`, whole or not at all (see the module's docstring). Without `replace`, an
    existing `dest` is an `AlreadyExists` error and is left as it is. The file is made with the umask's permissions.
    """
    dest = Path(dest)
    tmp = temporary_path(dest.parent)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            write_whole(fd, data)
        finally:
            os.close(fd)
        install(tmp, dest, replace)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folders, busy: bool = False):
    """
    Remove the temporary files of writes that were killed (SIGKILL, a crash, a power cut) in `folders`: this naming
    pattern only, and only when the process named in it is gone (older names, without a process id, are stale). Names
    of this process's id count as stale too (a killed process's id, used again), unless this process may be writing
    there itself (`busy`: other threads).
    """
    for folder in folders:
        try:
            candidates = [p for p in folder.iterdir() if is_temporary_name(p.name)]
        except OSError:
            continue
        for path in candidates:
            owner = temporary_owner(path.name)
            mine = owner == os.getpid()
            if owner is not None and (busy if mine else process_alive(owner)):
                continue
            with contextlib.suppress(OSError):
                path.unlink()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
