"""Writing outputs without losing anything: the one way every tool and exporter writes a file.

(And ``read_utf8``, the one way the readers of user files decode them.)

Two rules, for every output of the package:

- **Atomic.** A file (or a SavedModel folder) is written under a hidden temporary name in
  its own folder, flushed to disk (fsync), then renamed over the target: a crash, a kill
  or a full disk mid-write leaves the previous file intact and no half-written one.
- **Nothing overwritten by surprise.** ``OutputPlan`` checks every output before any work
  starts: an output that is one of the run's inputs is refused (always); an existing file
  the run did not create is refused unless the caller says ``overwrite``; a folder that
  cannot be created or written is refused. Each refusal is an ``OutputError`` naming the
  path and what to do.

Temporary names are ``.<name>.<pid>.tmp<suffix>``; ``remove_stale_temporaries`` deletes
those of processes that no longer run (what a kill -9 during a save leaves behind).
"""
import contextlib
import errno
import os
import re
import shutil
import tempfile

from ..errors import OutputError

TEMPORARY_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp(?P<suffix>\.[^.]*)?$")


def read_utf8(path):
    """The text of a UTF-8 file (a leading byte-order mark dropped), for the readers of user files.

    Raises:
        ValueError: ``line N: not UTF-8 text (byte 0x.. at column C); save the file as
            UTF-8`` (the caller adds which file).
    """
    with open(path, "rb") as file:
        data = file.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ValueError(
            f"line {line}: not UTF-8 text (byte 0x{data[error.start]:02x} at column {column}); save the file as UTF-8"
        ) from None


def temporary_path(path):
    """The hidden temporary name ``path`` is written under: same folder, same suffix (for libraries that look at it)."""
    folder, name = os.path.split(os.path.abspath(path))
    suffix = os.path.splitext(name)[1]
    return os.path.join(folder, f".{name}.{os.getpid()}.tmp{suffix}")


def _fsync_folder(folder):
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory descriptors
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _fsync_tree(path):
    if os.path.isdir(path):
        for root, _, files in os.walk(path):
            for name in files:
                with open(os.path.join(root, name), "rb") as file:
                    os.fsync(file.fileno())
            _fsync_folder(root)
    else:
        with open(path, "rb") as file:
            os.fsync(file.fileno())


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def write_atomically(path, write):
    """Write ``path`` through ``write(temporary_path)``, then rename it into place.

    Args:
        path: the file (or folder, e.g. a SavedModel) to write.
        write: f(temporary path) that writes the whole output there (a file or a folder).

    Raises:
        OutputError: the output could not be written (full disk, no permission, ...);
            the previous ``path``, if any, is intact and no temporary is left.
    """
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    temporary = temporary_path(path)
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_temporaries(folder, os.path.basename(path))
        _remove(temporary)
        write(temporary)
        if not os.path.lexists(temporary):
            raise OutputError(f"cannot write {path}: nothing was written")
        _fsync_tree(temporary)
        if os.path.isdir(temporary) and os.path.isdir(path):
            # a folder cannot be renamed over a non-empty one: move the old one aside first
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old.", dir=folder)
            os.replace(path, os.path.join(old, "previous"))
            os.replace(temporary, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, path)
        _fsync_folder(folder)
    except OutputError:
        _remove(temporary)
        raise
    except OSError as error:
        _remove(temporary)
        raise OutputError(f"cannot write {path}: {_reason(error)}") from None
    except Exception as error:
        _remove(temporary)
        if _is_tensorflow_io_error(error):
            raise OutputError(f"cannot write {path}: {_tensorflow_reason(error)}") from None
        raise
    except BaseException:
        _remove(temporary)
        raise


def _is_tensorflow_io_error(error):
    """TensorFlow's own file errors (a SavedModel's writer raises these, not OSError)."""
    import sys

    tensorflow = sys.modules.get("tensorflow")
    errors = getattr(tensorflow, "errors", None)
    return errors is not None and isinstance(error, errors.OpError)


def _tensorflow_reason(error):
    text = str(getattr(error, "message", error)).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "No space left" in text or "ResourceExhausted" in type(error).__name__:
        return "no space left on the device"
    return text


def _reason(error):
    if error.errno == errno.ENOSPC:
        return "no space left on the device"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (read-only or not yours)"
    return error.strerror or str(error)


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """``open`` for writing, atomically: the file appears at ``path`` only once it is complete."""
    if "w" not in mode:
        raise ValueError(f"atomic_open writes new files: mode must contain 'w', got {mode!r}")
    path = os.path.abspath(os.fspath(path))
    temporary = temporary_path(path)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        file = open(temporary, mode, **kwargs)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {_reason(error)}") from None
    try:
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_folder(os.path.dirname(path))
    except OSError as error:
        _remove(temporary)
        raise OutputError(f"cannot write {path}: {_reason(error)}") from None
    except BaseException:
        _remove(temporary)
        raise


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder, name=None):
    """Delete the temporaries of ``write_atomically`` left in ``folder`` by processes that died.

    Args:
        name: only those of this output name (default: all).

    Returns:
        list of the paths removed.
    """
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        match = TEMPORARY_PATTERN.match(entry)
        if name is not None and (not match or match.group("name") != name):
            continue
        if match and int(match.group("pid")) != os.getpid() and not _pid_alive(int(match.group("pid"))):
            path = os.path.join(folder, entry)
            _remove(path)
            removed.append(path)
    return removed


def _inside(path, folder):
    """Whether ``path`` lies in ``folder`` (or below), following links."""
    try:
        path, folder = os.path.realpath(path), os.path.realpath(folder)
    except OSError:
        return False
    return os.path.commonpath([path, folder]) == folder


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _writable_folder(folder):
    """The first problem with writing into ``folder`` (created if missing), or None."""
    existing = folder
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


class OutputPlan:
    """The outputs of one run, checked before any work starts, and the files the run created.

    Args:
        inputs: the files the run reads; an output is never one of them.
        overwrite: existing files the run did not create may be replaced.
        overwrite_flag: how the refusal names the way to allow it (e.g. '--overwrite').
    """

    def __init__(self, inputs=(), overwrite=False, overwrite_flag="--overwrite"):
        self.inputs = [os.path.abspath(os.fspath(p)) for p in inputs]
        self.overwrite = overwrite
        self.overwrite_flag = overwrite_flag
        self.created = set()

    def check_folder(self, folder, what="output folder"):
        """Refuse a folder that cannot be created or written (``OutputError`` naming it)."""
        folder = os.path.abspath(os.fspath(folder))
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise OutputError(f"{what} {folder} is a file, not a folder")
        problem = _writable_folder(folder)
        if problem:
            raise OutputError(f"cannot write the {what} {folder}: {problem}")
        return folder

    def check(self, path, what="output", folder_marker=None):
        """Refuse ``path`` if it is an input, an existing file not created by this run, or unwritable.

        Also refused, whatever ``overwrite`` says: an output that is a folder holding one of
        the inputs, and an existing folder that is not an output of the same kind (one
        without ``folder_marker``, e.g. 'saved_model.pb'), since replacing a folder deletes
        everything in it.

        Returns:
            the absolute path.
        """
        path = os.path.abspath(os.fspath(path))
        for source in self.inputs:
            if os.path.exists(path) and _same_file(path, source):
                raise OutputError(f"the {what} {path} is one of the inputs: it is never written over; choose another path")
            if os.path.isdir(path) and _inside(source, path):
                raise OutputError(f"the {what} {path} is a folder that holds the input {source}; choose another path")
        if os.path.isdir(path) and not os.path.islink(path):
            if folder_marker is None or not os.path.exists(os.path.join(path, folder_marker)):
                kind = f" (no {folder_marker} in it)" if folder_marker else ""
                raise OutputError(f"the {what} {path} is an existing folder{kind}: it is never replaced; choose another path")
        if os.path.lexists(path) and path not in self.created and not self.overwrite:
            raise OutputError(
                f"the {what} {path} exists already (from an earlier run?): pass {self.overwrite_flag} to replace it, "
                "or choose another path"
            )
        self.check_folder(os.path.dirname(path), "folder of the " + what)
        return path

    def write(self, path, write, what="output"):
        """``check`` then ``write_atomically``; the path then counts as created by this run."""
        path = self.check(path, what)
        write_atomically(path, write)
        self.created.add(path)
        return path

    @contextlib.contextmanager
    def open(self, path, mode="w", what="output", **kwargs):
        """``check`` then ``atomic_open``."""
        path = self.check(path, what)
        with atomic_open(path, mode, **kwargs) as file:
            yield file
        self.created.add(path)


class FolderLock:
    """An exclusive lock on a folder for one run (``fcntl.flock`` on the folder itself).

    A second run on the same folder gets an ``OutputError`` at once, naming the folder and
    the first run's process id (kept in a hidden file while the lock is held). The lock
    goes with the process: a killed run leaves no stale lock. Without ``fcntl`` (Windows)
    there is no lock.

    Args:
        folder: the folder (created if missing).
        owner: what holds it, for the message (e.g. 'another retinanet-train run').
        hint: what to do instead, for the message.
    """

    PID_FILE = ".keras_retinanet.lock"

    def __init__(self, folder, owner="another run", hint=""):
        self.folder = os.path.abspath(os.fspath(folder))
        self.owner = owner
        self.hint = hint
        self._descriptor = None

    @property
    def pid_path(self):
        return os.path.join(self.folder, self.PID_FILE)

    def acquire(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on the platforms tested
            return self
        try:
            os.makedirs(self.folder, exist_ok=True)
            descriptor = os.open(self.folder, os.O_RDONLY)
        except OSError as error:
            raise OutputError(f"cannot write the folder {self.folder}: {_reason(error)}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            try:
                with open(self.pid_path, encoding="ascii", errors="replace") as file:
                    holder = f"process {file.read().strip() or 'unknown'}"
            except OSError:
                holder = "a process"
            hint = f": {self.hint}" if self.hint else ""
            raise OutputError(f"{self.folder} is in use by {self.owner} ({holder}){hint}") from None
        self._descriptor = descriptor
        try:
            with open(self.pid_path, "w", encoding="ascii") as file:
                file.write(str(os.getpid()))
        except OSError as error:
            self.release()
            raise OutputError(f"cannot write the folder {self.folder}: {_reason(error)}") from None
        return self

    def release(self):
        if self._descriptor is not None:
            try:
                os.remove(self.pid_path)
            except OSError:
                pass
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
