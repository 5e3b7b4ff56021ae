"""Writing a file or a folder atomically: into a temporary sibling, renamed into place once it is complete.

A rename within one folder is atomic on every operating system, so a crash, an error or Ctrl-C leaves the old
path (or none), never half of the new one. The temporary file or folder is made as a plain ``open(path, "wb")``
or ``os.mkdir(path)`` makes one, so the umask applies (mode 0o666 & ~umask for a file, 0o777 & ~umask for a
folder): what appears at ``path`` has the permissions a direct write would give. (``tempfile.mkstemp`` and
``mkdtemp`` would make it private to its owner, 0o600 and 0o700, whatever the umask.)

    with atomic_file("picture.png") as f:       # f: a binary file; picture.png appears when the block ends
        image.save(f, format="PNG")
    with atomic_folder("model") as tmp:          # tmp: an empty folder, renamed to model when the block ends
        (tmp / "config.json").write_text("{}")
"""

import contextlib
import os
import secrets
import shutil
from pathlib import Path


def temporary_sibling(path):
    """A new hidden name in ``path``'s folder: ``.NAME.<16 hex digits>.tmp``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


@contextlib.contextmanager
def atomic_file(path):
    """Yield a binary file to write; it becomes ``path`` (flushed to disk) if the block ends without an error,
    and is removed otherwise. The folder of ``path`` must exist."""
    path = Path(path)
    tmp = temporary_sibling(path)
    # O_EXCL: never write into a file that is already there; mode 0o666 less the umask, as open() creates files.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(folder):
    """Yield a new empty folder (a Path) to fill; it is renamed to ``folder``, which must not exist, if the block
    ends without an error, and removed with everything in it otherwise. The parent of ``folder`` must exist."""
    folder = Path(folder)
    tmp = temporary_sibling(folder)
    os.mkdir(tmp)  # mode 0o777 less the umask, as for the folder itself
    try:
        yield tmp
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
