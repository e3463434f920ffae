"""The files of a run folder: a lock, atomic writes, the training log, the saved config.

Guarantees, whatever kills the process:
- a JSON or text file is either its old or its new content (written to a
  temporary file, flushed, then renamed over the old one);
- the training log `metrics.jsonl` only grows by whole lines; a half-written
  last line (a kill mid-append) is dropped with a warning when it is read;
- one process at a time works in a folder: `lock(folder)` holds an OS lock
  (released by the kernel when the process dies, however it dies); of the
  processes of a multi-host run, only process 0 writes (`is_primary_process`);
- two processes writing the same file at once (two recommends with one
  output) each write a temporary file of their own, named by host and pid;
  the last rename wins, whole. One left by a killed process on this host is
  removed by the next write of the same file.

Readers (serving) take no lock: they open files only for reading, and every
file they read is replaced by a rename, never rewritten in place.
"""

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import socket
import stat
from typing import Any, BinaryIO, Callable, Iterator

import jax
import ml_collections

from milk_jax import faults
from milk_jax import methods
from milk_jax.errors import ConfigError
from milk_jax.errors import RunFolderError

log = logging.getLogger('milk_jax')

LOCK_FILE = '.lock'


def is_primary_process() -> bool:
  """Only process 0 writes logs and results when several hosts train together."""
  return jax.process_index() == 0


@contextlib.contextmanager
def lock(folder: str) -> Iterator[None]:
  """Hold `folder`'s lock for the block; RunFolderError at once if another process has it."""
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, LOCK_FILE)
  handle = open(path, 'a+')
  try:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or 'unknown'
      raise RunFolderError(f'{folder} is in use by another process ({holder}); wait for it to '
                           'finish or stop it, then run the command again') from None
    handle.seek(0)
    handle.truncate()
    handle.write(f'pid {os.getpid()} on {socket.gethostname()}\n')
    handle.flush()
    yield
  finally:
    handle.close()  # Closing releases the lock.


_FILE_KINDS = ((stat.S_ISDIR, 'a folder'), (stat.S_ISFIFO, 'a FIFO (named pipe)'),
               (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'),
               (stat.S_ISSOCK, 'a socket'))


def check_regular_file(path: str, error: type[Exception] = RunFolderError) -> None:
  """`error` naming `path` when it exists (links followed) but is not a regular file.

  Checked before opening: a FIFO would block the reader forever and a device
  such as /dev/zero never ends. A missing file is left to the caller.
  """
  try:
    mode = os.stat(path).st_mode
  except FileNotFoundError:
    return
  if not stat.S_ISREG(mode):
    kind = next((name for test, name in _FILE_KINDS if test(mode)), 'not a regular file')
    raise error(f'{path}: {kind}, not a regular file; give a regular file')


def _temporary_name(path: str) -> str:
  """`path`.<host>-<pid>-<random>.tmp: no other writer of `path` picks the same name."""
  return f'{path}.{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.tmp'


def _remove_stale_temporaries(path: str) -> None:
  """Removes the temporary files of `path` left by killed processes of this host."""
  folder, name = os.path.split(os.path.abspath(path))
  pattern = re.compile(re.escape(f'{name}.{socket.gethostname()}-') + r'(\d+)-[0-9a-f]{8}\.tmp')
  try:
    names = os.listdir(folder)
  except OSError:
    return
  for other in names:
    match = pattern.fullmatch(other)
    if match is None or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
      continue
    with contextlib.suppress(FileNotFoundError):  # Another writer removed it first.
      os.remove(os.path.join(folder, other))


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's process.
    return True
  return True


def _write_aside(path: str, write: Callable[[BinaryIO], None], tmp: str | None = None) -> str:
  """What `write` writes to a temporary file beside `path`, flushed to disk; returns its path.

  The caller renames it over `path`. A failed or interrupted write (a full
  disk, Ctrl-C) removes the temporary file and leaves the folder as it was.
  `tmp` (default: a name of this process's own) is where it is written.
  """
  tmp = tmp or _temporary_name(path)
  try:
    with open(tmp, 'xb') as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  return tmp


def write_file(path: str, write: Callable[[BinaryIO], None]) -> None:
  """Replace `path` atomically with what `write` writes to a binary file, flushed to disk.

  A kill at any point leaves either the old file or the new one, never half
  of one. Processes writing the same `path` at once do not collide: each
  renames its own whole file, and the last one wins.
  """
  _remove_stale_temporaries(path)
  tmp = _write_aside(path, write)
  faults.crash_point('write_file', 0)
  os.replace(tmp, path)


def _utf8(text: str) -> Callable[[BinaryIO], None]:
  return lambda f: f.write(text.encode('utf-8'))


def write_text(path: str, text: str) -> None:
  """Replace `path` with `text` (UTF-8) atomically."""
  write_file(path, _utf8(text))


def write_json(path: str, payload: Any) -> None:
  """Replace `path` with `payload` as JSON, atomically."""
  write_text(path, json.dumps(payload, indent=2) + '\n')


def read_json(path: str, what: str) -> Any:
  """The JSON content of `path`; RunFolderError naming the file when it is not valid JSON.

  `what` says what the file holds, for the message ('the run's config').
  """
  check_regular_file(path)
  try:
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise RunFolderError(f'{path} is damaged (not valid JSON: {error}); it holds {what}: '
                         'restore it from a copy, or delete the run folder to start over'
                         ) from None


def read_log(path: str) -> list[dict[str, Any]]:
  """The records of a `metrics.jsonl`; a half-written last line is dropped with a warning."""
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = f.read().split('\n')
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if number >= len(lines) - 1:  # The last line, with or without its newline.
        log.warning('%s: dropping the half-written last line %d (the run was killed while '
                    'writing it)', path, number)
        continue
      raise RunFolderError(f'{path}: line {number} is not valid JSON; the training log is '
                           'damaged: restore it, or delete the run folder to start over'
                           ) from None
  return records


def rewrite_log(path: str, records: list[dict[str, Any]], epoch: int) -> None:
  """Replace the log with `records` atomically (used to drop an interrupted tail).

  Only the holder of the folder's lock writes the log, so its temporary file
  has a fixed name (`metrics.jsonl.tmp`), replaced by the next rewrite.
  """
  tmp = f'{path}.tmp'
  with contextlib.suppress(FileNotFoundError):
    os.remove(tmp)  # Left by a process killed mid-rewrite.
  tmp = _write_aside(path, _utf8(''.join(json.dumps(r) + '\n' for r in records)), tmp)
  faults.crash_point('log_rewrite', epoch)
  os.replace(tmp, path)


def append_log(path: str, record: dict[str, Any]) -> None:
  """Append one record as one line; a kill mid-write leaves at most one partial line."""
  line = json.dumps(record) + '\n'
  with open(path, 'a') as f:
    if faults.armed('log_append', record['epoch']):
      f.write(line[:len(line) // 2])
      f.flush()
      faults.crash_point('log_append', record['epoch'])
    f.write(line)


# ------------------------------------------------------------- the run's config

CONFIG_FILE = 'config.json'
# Config fields that may change between an interrupted run and its resumption:
# they never change what a run computes (num_epochs only extends it, see
# `check_continuation`); the benchmark and serving sections never affect training.
RESUMABLE_CHANGES = ('train.resume', 'train.num_epochs', 'train.checkpoint_every')
IGNORED_SECTIONS = ('benchmark.', 'recommend.', 'export.')
# Fields added after runs were first saved, with the value those runs used.
ADDED_FIELDS = {'train.sampler': 'host', 'train.feature_dtype': 'float32',
                'train.data_parallel': False, 'train.shard_user_table': False,
                'train.shard_item_features': False,
                'train.divergence_factor': 10.0, 'train.divergence_epochs': 3,
                'train.task_loss': 'mean', 'data.ids': 'dense',
                'data.item_ids_file': 'item_ids.txt', 'data.min_rating': None,
                'data.split': 'random', 'method': 'milk', 'eval.calibration': 'none',
                'eval.calibration_shrinkage': 50.0, 'model.fusion': 'mean',
                'train.modality_dropout': 0.0, 'data.synthetic.sampler': 'softmax',
                'data.synthetic.candidate_factor': 10.0, 'data.unpopular_fraction': 0.7,
                'data.stratified_missing_rate': 2 / 3, 'methods.gar.variant': 'original',
                'methods.gar.coldrec_reg': 1e-4, 'methods.mtpr.init': 'normal',
                'methods.mtpr.new_item_representation': 'counterfactual'}


def _unread_fields(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Prefixes of the fields that `config.method` never reads: the fields other methods
  declare (MethodInfo.fields) and any other method section, the backbone section for a
  method without one, and where the backbone lives (its own folder checks its settings)."""
  name = config.get('method', 'milk')
  known = methods.names()
  unread = [f'methods.{other}.' for other in config.get('methods', {}) if other != name]
  for other in known:
    if other != name:
      unread.extend(methods.info(other).fields)
  unread.append('backbone.run_dir')
  if name not in known or methods.info(name).backbone is None:
    unread.append('backbone.')
  return tuple(dict.fromkeys(unread))


def _flatten(d: dict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in d.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def saved_config(folder: str) -> dict[str, Any] | None:
  """The config.json of a run folder, or None when there is none."""
  path = os.path.join(folder, CONFIG_FILE)
  return read_json(path, "the run's config") if os.path.exists(path) else None


def changed_fields(saved: dict[str, Any], config: ml_collections.ConfigDict) -> list[str]:
  """Dotted fields where `config` differs from a saved config, besides RESUMABLE_CHANGES."""
  previous = _flatten(saved)
  current = _flatten(json.loads(config.to_json()))
  for key, value in ADDED_FIELDS.items():  # Saved by an older version: it ran with `value`.
    previous.setdefault(key, value)
    current.setdefault(key, value)  # An older run's own config, read back (`--mode=eval`).
  ignored = IGNORED_SECTIONS + _unread_fields(config)
  return sorted(k for k in previous.keys() | current.keys()
                if k not in RESUMABLE_CHANGES and not k.startswith(ignored)
                and previous.get(k) != current.get(k))


def check_same_run(folder: str, saved: dict[str, Any] | None,
                   config: ml_collections.ConfigDict) -> None:
  """ConfigError when `folder` holds a run of another config."""
  differing = changed_fields(saved, config) if saved is not None else []
  if differing:
    raise ConfigError(f'{os.path.join(folder, CONFIG_FILE)} holds a run with a different config '
                      f'(fields: {", ".join(differing)}); use a fresh --workdir for a new run.')


def check_continuation(folder: str, saved_num_epochs: int, trained_epochs: int,
                       config: ml_collections.ConfigDict) -> None:
  """ConfigError when a run cannot be extended to config.train.num_epochs exactly.

  A run evaluates every eval_every epochs and at its last epoch. Continued to
  a new num_epochs, it matches a run trained for that many epochs from the
  start unless it already trained past it, or it reached its old last epoch
  and evaluated there off the schedule.
  """
  num_epochs, eval_every = config.train.num_epochs, config.train.eval_every
  if trained_epochs > num_epochs:
    raise ConfigError(f'{folder} has trained {trained_epochs} epochs, more than '
                      f'config.train.num_epochs={num_epochs}; use a fresh --workdir for a '
                      'shorter run.')
  if (num_epochs != saved_num_epochs and trained_epochs == saved_num_epochs
      and saved_num_epochs % eval_every):
    raise ConfigError(
        f'{folder} ended at its config.train.num_epochs={saved_num_epochs} with an evaluation '
        f'off the every-{eval_every}-epochs schedule, so continuing it to {num_epochs} epochs '
        f'would not match a {num_epochs}-epoch run; use a fresh --workdir.')
