"""Never lose a user's work: the one rule for output directories, the run lock, confined paths.

The output rule (every verb that writes a directory follows it):

- a verb never writes into one of its own inputs — nor into a directory inside one, nor into
  one that contains one — even with `--overwrite` (paths compared after resolving symlinks);
- it never writes into a directory that already holds something (a model, prepared data, any
  other file) unless `--overwrite` is given; a training run continues in place only with
  `--resume`;
- a verb that writes its output in one go (prepare, import, export, quantize, merge-lora)
  builds it in a temporary sibling directory (`.NAME.partial-PID`) and renames it into place
  at the end, so an interrupted or failed run leaves nothing half-made and a re-run works;
  `--overwrite` replaces the old directory as a whole, in one rename.

The run lock: a writer holds an advisory `flock` (released by the kernel when the process
dies, however it dies) — a training run on `OUT/.lmforge-lock`, a staged writer on its partial
directory — and a second writer into the same directory is refused with the first one's PID.
Leftovers of a killed writer (partial directories, `*.tmp` files) are removed when the
directory is next opened for writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ConfigError, ModelDirError

LOCK_FILE = ".lmforge-lock"
PARTIAL, OLD = ".partial-", ".old-"
# what lmforge itself leaves in a directory that says nothing about its content
OWN_HIDDEN = (LOCK_FILE,)
_HELD: set[Path] = set()      # directories whose RunLock this process holds


# ------------------------------------------------------------------------------ the rule
def resolved(path: str | Path) -> Path:
    """`path` made absolute with symlinks and `..` resolved (it need not exist)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _overlap(out: Path, inp: Path) -> str | None:
    if out == inp:
        return "is"
    if out.is_relative_to(inp):
        return "is inside"
    if inp.is_relative_to(out):
        return "contains"
    return None


def check_not_input(out: str | Path, inputs: Iterable[tuple[str, str | Path | None]], out_name: str = "the output"
                    ) -> None:
    """Refuse an output directory that is, is inside, or contains one of the verb's inputs
    ((description, path) pairs; None paths are skipped), whatever --overwrite says."""
    rout = resolved(out)
    for what, path in inputs:
        if path is None or str(path) == "":
            continue
        relation = _overlap(rout, resolved(path))
        if relation:
            raise ConfigError(f"{out_name} {out} {relation} {what} {path}; writing there would destroy an input "
                              f"(even with --overwrite) — choose another output directory")


def contents(path: Path) -> str | None:
    """What an existing directory holds, in words (None: absent or empty)."""
    if not path.is_dir():
        return None
    names = sorted(p.name for p in path.iterdir() if p.name not in OWN_HIDDEN)
    if not names:
        return None
    if "config.json" in names:
        return "a model (config.json)"
    if "meta.json" in names or "train.bin" in names:
        return "prepared data (meta.json)"
    if "adapter_config.json" in names:
        return "LoRA adapters"
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} file(s) lmforge did not write ({shown})"


def check_output(out: str | Path, *, inputs: Iterable[tuple[str, str | Path | None]] = (), overwrite: bool = False,
                 out_name: str = "the output") -> Path:
    """Apply the output rule to `out` before anything is written; returns it as a Path."""
    out = Path(out)
    check_not_input(out, inputs, out_name)
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{out_name} {out} cannot be created: {parent} is a file, not a directory; choose "
                              f"another path")
    held = contents(out)
    if held and not overwrite:
        raise ConfigError(f"{out_name} {out} already holds {held}; pass --overwrite to replace it, or choose a "
                          f"new or empty directory")
    if held and overwrite:
        r = resolved(out)
        if r == Path(r.anchor) or r == resolved(Path.home()) or resolved(Path.cwd()).is_relative_to(r):
            raise ConfigError(f"--overwrite would replace {out} as a whole (the current, home or root directory); "
                              f"choose a directory of its own")
    check_no_writer(out)
    return out


# ------------------------------------------------------------------------------ locks
def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _partials(out: Path) -> list[Path]:
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        return []
    prefix = f".{out.name}"
    return [p for p in parent.iterdir() if p.name.startswith(prefix + PARTIAL) or p.name.startswith(prefix + OLD)]


def _locked_by_other(path: Path) -> bool:
    """Whether another process holds the flock of `path` (a file or directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        if _try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


def _lock_holder(out: Path) -> str:
    try:
        return (out / LOCK_FILE).read_text().strip() or "?"
    except OSError:
        return "?"


def check_no_writer(out: Path) -> None:
    """Refuse when another live process is writing `out` (a training run or a staged writer)."""
    own = f"{PARTIAL}{os.getpid()}"
    if resolved(out) not in _HELD and (out / LOCK_FILE).is_file() and _locked_by_other(out / LOCK_FILE):
        raise ConfigError(f"{out} is being written by another lmforge process (PID {_lock_holder(out)}); wait for "
                          f"it to finish or stop it, or choose another directory")
    for p in _partials(out):
        if PARTIAL in p.name and not p.name.endswith(own) and _locked_by_other(p):
            pid = p.name.rsplit("-", 1)[-1]
            raise ConfigError(f"{out} is being written by another lmforge process (PID {pid}); wait for it to "
                              f"finish or stop it, or choose another directory")


def clean_partials(out: Path) -> None:
    """Remove what killed staged writers left beside `out`; if one died between moving the old
    directory aside and renaming the new one in, put the old one back."""
    for p in _partials(out):
        if _locked_by_other(p):
            continue
        if OLD in p.name and not out.exists():
            os.rename(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)


def clean_temp_files(directory: Path) -> list[Path]:
    """Remove the `*.tmp` files interrupted atomic writes left in `directory` and its subdirectories
    (call it holding the directory's lock). Returns what was removed."""
    removed = []
    for p in directory.rglob("*.tmp"):
        if p.is_file() and p.name.startswith("."):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class RunLock:
    """The advisory lock of a directory written in place (a training run): `OUT/.lmforge-lock`,
    holding the writer's PID. The kernel drops it when the process ends, even by kill -9."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            raise ConfigError(f"{self.directory} is being written by another lmforge process (PID "
                              f"{_lock_holder(self.directory)}); wait for it to finish or stop it, or choose "
                              f"another --out")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        _HELD.add(resolved(self.directory))
        return self

    def release(self) -> None:
        if self.fd is not None:
            _HELD.discard(resolved(self.directory))
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------------------ staged output
def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


@contextlib.contextmanager
def staged_output(out: str | Path, *, inputs: Iterable[tuple[str, str | Path | None]] = (), overwrite: bool = False,
                  out_name: str = "the output") -> Iterator[Path]:
    """Check `out` against the output rule, then yield a fresh temporary sibling directory to
    write the whole output into; on success it is renamed to `out` (replacing the old directory
    with --overwrite), on any failure or interrupt it is removed.

        with staged_output("runs/q", inputs=[("the model", "runs/m")]) as tmp:
            write_everything_into(tmp)
    """
    out = Path(out)
    inputs = list(inputs)
    clean_partials(out)
    check_output(out, inputs=inputs, overwrite=overwrite, out_name=out_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}{PARTIAL}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    fd = os.open(tmp, os.O_RDONLY)
    _try_lock(fd)
    try:
        yield tmp
        _fsync_tree(tmp)
        check_output(out, inputs=inputs, overwrite=overwrite, out_name=out_name)   # nothing appeared meanwhile
        if out.exists():
            old = out.parent / f".{out.name}{OLD}{os.getpid()}"
            os.rename(out, old)                      # an empty directory, or --overwrite
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ confined paths
def confined(base: str | Path, name: str, what: str) -> Path:
    """`base / name` when it stays inside `base` (after resolving symlinks); else a ModelDirError.
    For file names read from a directory's own files (shard names, module paths), which must not
    point elsewhere."""
    base = Path(base)
    if not isinstance(name, str) or not name or os.path.isabs(name):
        raise ModelDirError(f"{what} {name!r} in {base} is not a relative path inside the directory; the "
                            f"directory may be corrupted or crafted — re-download it")
    path = base / name
    if not resolved(path).is_relative_to(resolved(base)):
        raise ModelDirError(f"{what} {name!r} in {base} points outside the directory; refusing to follow it — the "
                            f"directory may be corrupted or crafted, re-download it")
    return path
