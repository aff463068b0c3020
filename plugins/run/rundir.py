"""Run directories: one run per directory, one process per run.

- `open_run_dir` checks the path (a NUL byte, a file in the way, an unwritable or virtual
  place are one clear `RunDirError`), creates the folder and takes its lock: a file
  `gengraph.lock` created with O_CREAT|O_EXCL that holds the owner's PID and host. A lock
  whose PID is no longer alive on this host is stale and is taken over with a note; a live
  one refuses the second run with a message naming the PID.
- `run_files` lists what gengraph wrote there; a new run refuses a folder that holds
  another run unless told to overwrite, and `clear_run_files` then removes only gengraph's
  own files (never a file of the user's).
- The report's files (summary, loss curve, the plugin's plots and samples) are recorded with
  their SHA-256 in REPORT_RECORD as they are written: a file of that name that the user wrote
  there later (`gengraph sample RUN --out RUN/samples.png`) or changed no longer matches, so it
  is the user's: --resume and --overwrite keep it, and a run refuses to write over it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from gengraph.engine.errors import UserError
from gengraph.plugins.blocks.files import atomic_write, sha256_bytes, sha256_file
from gengraph.plugins.spec.schema import is_number

LOCK_NAME = "gengraph.lock"
MANIFEST = "files.json"  # the plugin-written files of the run (plots, samples), for --overwrite
# The report's files as the run wrote them, {"files": {name: SHA-256, or None while being written, or
# "" once gone}}: which files of the report's names are the run's (owned_report). The sweep's trial
# mark (.sweep-attempt, which lists a trial folder's files with their SHA-256) is the same idea.
REPORT_RECORD = ".report-files.json"
# Files the runner itself writes into a run directory; what a plugin writes (plots, samples) is
# listed in the run's MANIFEST. Only these are a run's: a user's samples.npy or log.txt beside a run
# is theirs, and --overwrite keeps it.
RUN_FILES = ("spec.toml", "env.json", "metrics.jsonl", "summary.json", "summary.txt", "checkpoint.npz",
             "checkpoint.json", "loss.png", MANIFEST, REPORT_RECORD)
# Any of these makes a folder "hold a run".
RUN_MARKERS = ("spec.toml", "metrics.jsonl", "checkpoint.npz", "summary.json")


class RunDirError(UserError, ValueError):
    """A run directory that cannot be used: a bad path, held by another process, or holding
    another run. One message; the CLI exits 2."""


def check_path(run_dir) -> Path:
    text = os.fspath(run_dir)
    if "\0" in text:
        raise RunDirError(f"run directory {text!r}: the name contains a NUL byte")
    if not text.strip():
        raise RunDirError("run directory: the name is empty")
    path = Path(text)
    try:
        if path.exists() and not path.is_dir():
            raise RunDirError(f"run directory {path}: exists and is not a directory")
    except OSError as exc:
        raise RunDirError(f"run directory {path}: cannot be used ({exc.strerror or exc})") from None
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OverflowError:
        return False
    return True


def _process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), from /proc; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22; the name in () may hold spaces
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _lock_time(owner: dict) -> float | None:
    """When the lock was written (its "time", seconds since the epoch); None for a lock of an
    earlier version, whose local "started" text cannot be compared across time zones."""
    t = owner.get("time")
    return float(t) if is_number(t) else None


def _why_stale(owner: dict) -> str | None:
    """Why the lock's writer no longer runs, or None while it does: its PID is gone, or now names
    a process that started after the lock was written (a PID the system gave out again)."""
    if not _pid_alive(owner["pid"]):
        return f"PID {owner['pid']} is not running"
    started, written = _process_start(owner["pid"]), _lock_time(owner)
    if started is not None and written is not None and started > written + 2.0:  # 2 s: clock ticks
        return f"PID {owner['pid']} now names a process started after the lock was written"
    return None


class RunLock:
    """The lock of one run directory, held from `acquire` to `release`."""

    def __init__(self, run_dir: Path, created=()):
        self.run_dir = run_dir
        self.path = run_dir / LOCK_NAME
        self.created = list(created)  # the folders this run made, innermost first: removed again if left empty
        self.token = ""
        self.folder_id = None  # (device, inode) of the folder the lock was taken in

    def _create(self) -> bool:
        """Create the lock file atomically; False when it exists already."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise RunDirError(f"run directory {self.run_dir}: cannot write there ({exc.strerror or exc})") from None
        self.token = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S"), "time": time.time()})
        with os.fdopen(fd, "w") as fh:
            fh.write(self.token + "\n")
        return True

    def _owner(self) -> tuple[dict | None, str]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None, ""
        except OSError as exc:
            raise RunDirError(f"{self.path}: cannot read the lock ({exc.strerror or exc})") from None
        try:
            owner = json.loads(text)
            pid = owner.get("pid") if isinstance(owner, dict) else None
            if type(pid) is not int or pid <= 0:  # os.kill(0 or -1, 0) succeeds: such a lock names no process
                raise ValueError
        except ValueError:
            owner = {}
        return owner, text

    def acquire(self, log=print) -> "RunLock":
        for _ in range(5):
            if self._create():
                st = self.run_dir.stat()
                self.folder_id = (st.st_dev, st.st_ino)
                return self
            owner, text = self._owner()
            if owner is None:  # released meanwhile: try again
                continue
            host = socket.gethostname()
            if not owner:
                try:
                    age = time.time() - self.path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < 10:  # being written by a run that is starting this instant
                    raise RunDirError(f"{self.run_dir} is in use by another gengraph run that is starting "
                                      f"(lock {self.path}); choose another --out")
            elif owner.get("host") != host:
                raise RunDirError(f"{self.run_dir} is in use by a gengraph run on host {owner.get('host')} "
                                  f"(PID {owner['pid']}); if that run is gone, delete {self.path}")
            elif (why := _why_stale(owner)) is None:
                raise RunDirError(f"{self.run_dir} is in use by another gengraph run (PID {owner['pid']}, "
                                  f"started {owner.get('started', '?')}); wait for it to end or choose another --out "
                                  f"(if no gengraph run works there, delete {self.path})")
            # stale: move it aside under a unique name, and check it was the one judged stale
            aside = self.path.with_name(f".{LOCK_NAME}.stale.{os.getpid()}")
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                continue
            moved = aside.read_text()
            if moved != text:  # another run took the lock over in between: put it back, refuse
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)
                aside.unlink(missing_ok=True)
                raise RunDirError(f"{self.run_dir} is in use by another gengraph run (lock {self.path})")
            aside.unlink(missing_ok=True)
            what = why if owner else "it held no owner's PID" if text.strip() else "it was left empty"
            log(f"note: took over the stale lock {self.path} ({what})")
        raise RunDirError(f"{self.run_dir}: could not take the lock {self.path}")

    def check_held(self) -> None:
        """RunDirError unless the folder is still the one the lock was taken in and the lock still
        this run's: a folder deleted (and made again, perhaps by another run) while the run wrote
        to it got the rest of its files beside another run's, without a lock."""
        try:
            st = self.run_dir.stat()
            same = (st.st_dev, st.st_ino) == self.folder_id and self.path.read_text().strip() == self.token
        except OSError:
            same = False
        if not same:
            raise RunDirError(f"{self.run_dir} was deleted, replaced or unlocked while this run was writing to it: "
                              "the run stops here rather than write into a folder it no longer holds")

    def release(self) -> None:
        with contextlib.suppress(OSError):
            if self.token and self.path.read_text().strip() == self.token:
                self.path.unlink()
        self.token = ""
        for folder in self.created:  # only if empty: a run that failed before writing anything
            try:
                folder.rmdir()
            except OSError:
                break


def open_run_dir(run_dir, log=print) -> RunLock:
    """Check the path, create the folder, take its lock."""
    path = check_path(run_dir)
    created, folder = [], path  # --out a/b/c where only a exists: c, then b (a refused run left b behind)
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"run directory {path}: cannot create it ({exc.strerror or exc})") from None
    return RunLock(path, created).acquire(log)


def run_files(run_dir: Path) -> list[str]:
    """The files of a run that gengraph wrote into run_dir (empty: no run there). The report's files
    count where the run's record vouches for them (REPORT_RECORD); in a folder without a record (made
    by a gengraph that kept none) by their names."""
    if not any((run_dir / name).exists() for name in RUN_MARKERS):
        return []
    names = list(RUN_FILES) + _manifest(run_dir)
    owned = owned_report(run_dir)
    if owned is not None:
        report = set(report_names(run_dir))
        names = [n for n in names if n not in report or n in owned]
    return [n for n in dict.fromkeys(names) if (run_dir / n).is_file()]


def report_names(run_dir: Path) -> list[str]:
    """The names of the report of the run in run_dir: the runner's and those the plugin was handed."""
    return list(dict.fromkeys(REPORT_FILES + tuple(_manifest(run_dir))))


def _record(run_dir: Path) -> dict | None:
    """The record, {name: SHA-256 | "" | None}; None where there is none (a folder of an earlier
    gengraph's) or it cannot be read: then nothing tells the run's report from the user's files. A
    damaged entry vouches for nothing ("")."""
    try:
        record = json.loads((run_dir / REPORT_RECORD).read_text())
    except (OSError, ValueError):
        return None
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict):
        return None
    return {n: h if h is None or isinstance(h, str) else "" for n, h in files.items()}


def owned_report(run_dir: Path) -> list[str] | None:
    """The report files in run_dir that are the run's, as its record says (None without a record,
    where they cannot be told from the user's). Per name, the record holds the SHA-256 of the file
    the run wrote (the file is the run's while it still has it), None while the run writes it (the
    run was stopped then), or "" once the run's file is gone (a file there now is someone else's). A
    name the plugin was handed (files.json) that the record lacks is the run's: the run was stopped
    between writing the file and recording it."""
    record = _record(run_dir)
    if record is None:
        return None
    handed = set(_manifest(run_dir))
    return [n for n in report_names(run_dir) if (run_dir / n).is_file() and _vouched(run_dir, n, record, handed)]


def _vouched(run_dir: Path, name: str, record: dict, handed: set) -> bool:
    """Whether the record says the file `name` in run_dir is the run's (owned_report's rule): its
    SHA-256 as recorded, or being written (None; a name the plugin was handed and the record lacks)."""
    digest = record.get(name, None if name in handed else "")
    return digest is None or (bool(digest) and sha256_file(run_dir / name) == digest)


def refuse_foreign(run_dir: Path, names) -> None:
    """RunDirError for a file among `names` in run_dir that the run's record does not vouch for: one
    the user wrote there while the run was training (`gengraph sample RUN --out RUN/samples.png`),
    which the report would have replaced without a word. The training is in the checkpoint."""
    record = _record(run_dir)
    if record is None:
        return
    handed = set(_manifest(run_dir))
    for n in names:
        if (run_dir / n).is_file() and not _vouched(run_dir, n, record, handed):
            raise RunDirError(f"{run_dir / n} is not a file this run wrote (it was written there while the run "
                              f"trained), so the report does not write over it: move it away, then gengraph run "
                              f"--resume {run_dir} writes the report")


def start_record(run_dir: Path) -> None:
    """The record of a run that begins in run_dir (empty), unless --resume keeps the one there: from
    then on, which report files are the run's is known, also when the run is stopped before its report."""
    if _record(run_dir) is None:
        atomic_write(run_dir / REPORT_RECORD, json.dumps({"files": {}}, indent=1) + "\n")


def record_report(run_dir: Path, names=(), *, written=None, pending=()) -> None:
    """Record report files: `names` as they are now in run_dir (the SHA-256 of each file, "" where
    there is none), `written`, {name: the text or bytes about to be written} (recorded first: a run
    stopped in between leaves an entry for a file that is not there, never a file of its own
    unrecorded), and `pending`, files about to be written whose bytes are not known beforehand."""
    record = _record(run_dir) or {}
    record.update({n: sha256_file(run_dir / n) if (run_dir / n).is_file() else "" for n in names})
    record.update({n: sha256_bytes(data) for n, data in (written or {}).items()})
    record.update({n: None for n in pending})
    atomic_write(run_dir / REPORT_RECORD, json.dumps({"files": dict(sorted(record.items()))}, indent=1) + "\n")


def _manifest(run_dir: Path) -> list[str]:
    try:
        names = json.loads((run_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str) and n and "/" not in n and n not in (".", "..")] \
        if isinstance(names, list) else []


def write_manifest(run_dir: Path, names) -> None:
    names = sorted(set(names) | set(_manifest(run_dir)))
    atomic_write(run_dir / MANIFEST, json.dumps(names, indent=1) + "\n")


def clear_run_files(run_dir: Path) -> tuple[list[str], Path | None]:
    """Remove the files an earlier run wrote (and their half-written temporaries); user files stay.
    In a folder without a record of its report files (an earlier gengraph's), those of the report's
    names cannot be told from the user's: they are moved into a new folder (report-before-overwrite)
    rather than deleted. Returns the names, and that folder (None: nothing was moved)."""
    names = run_files(run_dir)
    # without a record (where owned_report says None; no file needs hashing to know it), the report's names
    report = set(report_names(run_dir)) if _record(run_dir) is None else set()
    unsure = [n for n in names if n in report]
    for n in names:
        if n not in unsure:
            (run_dir / n).unlink(missing_ok=True)
    aside = _move_aside(run_dir, unsure, "report-before-overwrite") if unsure else None
    clear_temporaries(run_dir, names)
    return names, aside


def _move_aside(run_dir: Path, names, folder: str) -> Path:
    """Move the files `names` of run_dir into a new folder `folder` (or folder-2, ...) there."""
    for i in range(1, 1000):
        aside = run_dir / (folder if i == 1 else f"{folder}-{i}")
        try:
            aside.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise RunDirError(f"{run_dir}: no free name for a folder {folder}-N to keep the earlier report in")
    for n in names:
        os.replace(run_dir / n, aside / n)
    return aside


# What a resumed run writes again at its end; kept, an interrupted or changed continuation left
# the old report beside a later checkpoint (a 200-epoch summary.json with a 229-epoch checkpoint)
REPORT_FILES = ("summary.json", "summary.txt", "loss.png")


ASIDE = "report-before-resume"  # where --resume moves the report of a folder without a record


def clear_report(run_dir: Path) -> tuple[list[str], Path | None]:
    """Remove the report of the run in run_dir (summary, loss curve, the plugin's plots and samples):
    the files its record says are the run's. A file of the report's names that the user wrote there
    (or changed) stays. In a folder without a record (an earlier gengraph's) the report cannot be
    told from the user's files: its files are moved, not deleted, into a new folder ASIDE in run_dir.
    Returns the names, and that folder (None: the files were the run's, and are deleted). Either way
    the record then says that the run has no report file there."""
    owned, aside = owned_report(run_dir), None
    if owned is not None:
        names = owned
        for n in names:
            (run_dir / n).unlink(missing_ok=True)
    elif names := [n for n in report_names(run_dir) if (run_dir / n).is_file()]:
        aside = _move_aside(run_dir, names, ASIDE)
    record_report(run_dir, [n for n in report_names(run_dir) if not (run_dir / n).exists()])
    return names, aside


def clear_temporaries(run_dir: Path, names=()) -> None:
    """Remove the half-written temporaries of the run's atomic writes (.checkpoint.npz.XXXX.tmp)
    that a killed process left; the caller holds the folder's lock, so none is being written.
    A resumed run left them behind (a 1 MiB checkpoint temporary after a SIGKILL)."""
    ours = set(RUN_FILES) | set(names) | set(_manifest(run_dir))
    for tmp in run_dir.glob(".*.tmp"):
        if any(tmp.name.startswith(f".{n}.") for n in ours):
            tmp.unlink(missing_ok=True)


def listed(names, most: int = 4) -> str:
    """The first `most` names, comma-separated, with "..." when there are more (for messages)."""
    return ", ".join(list(names[:most]) + (["..."] if len(names) > most else []))


SWEEP_MARKERS = ("sweep.jsonl", "sweep.json")  # what `gengraph sweep` writes at its folder's top


def refuse_sweep_folder(run_dir: Path) -> None:
    """A run never goes into a sweep's folder, not even with --overwrite: it replaced the sweep's
    summary.txt (a sweep already refuses a run's folder)."""
    found = [n for n in SWEEP_MARKERS if (run_dir / n).exists()]
    if found:
        raise RunDirError(f"{run_dir} holds a sweep ({listed(found)}); a run needs a folder of its own: "
                          "choose another --out")


def refuse_user_files(run_dir: Path, *, plots: bool = True, resume: bool = False) -> None:
    """A run never replaces a user's file whose name a run writes (loss.png, env.json in a folder
    that holds no run; in a run's folder, a report file its record does not vouch for, such as a
    loss.png or summary.txt the user wrote over the run's): they were overwritten without a word.
    Checked before anything is trained or written. (The plugin's files are known only as its report
    asks for them: RunContext.path refuses those.)"""
    ours = run_files(run_dir)
    if ours:  # the run's own files: refuse_if_taken, --overwrite and --resume deal with them
        writes = ("summary.json", "summary.txt") + (("loss.png",) if plots else ())
        found = [n for n in writes if n not in ours and (run_dir / n).is_file()]
    else:
        found = [n for n in RUN_FILES if (run_dir / n).is_file()]
    if found:
        how = "move them away and resume again" if resume else "move them away or choose another --out"
        raise RunDirError(f"{run_dir} holds files that no gengraph run wrote but a run would write over "
                          f"({listed(found)}): {how}")


def foreign_files(run_dir: Path) -> set:
    """The plain files in run_dir that are not the run's (nor its lock or temporaries): the user's."""
    ours = set(run_files(run_dir)) | {LOCK_NAME}
    return {p.name for p in run_dir.iterdir() if p.is_file() and p.name not in ours
            and not (p.name.startswith(".") and p.name.endswith(".tmp"))}


def refuse_if_taken(run_dir: Path) -> None:
    found = run_files(run_dir)
    if found:
        shown = listed(found)
        # --resume needs a checkpoint: a run that failed before its first one cannot be continued
        resume = f", or --resume {run_dir} to continue it" if (run_dir / "checkpoint.npz").exists() else \
            " (it has no checkpoint to resume from)"
        raise RunDirError(f"{run_dir} holds another run ({shown}); pass --overwrite to replace it{resume}")

