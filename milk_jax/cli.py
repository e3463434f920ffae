"""What the command line does with errors: one `error: ...` line, not a traceback.

A user's mistake (milk_jax.errors.UserError: bad config or data, a run
folder of another run or in use, a damaged file, divergence, Ctrl-C), a bad
flag, or a failing disk (full, read-only, no permission) is printed as one
line and ends with a non-zero exit code; anything else is a bug and keeps
its traceback. `verbose` shows the traceback in every case.
"""

import errno
import os
import re
import sys
import threading
import traceback
from typing import Callable

from absl import flags

from milk_jax import interrupt
from milk_jax.errors import UserError

# Errors of the machine rather than of milk-jax: the message is all a user needs.
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


# Tensorstore (under orbax) reports a failed write as a ValueError naming the errno.
_TENSORSTORE_ERRNO = re.compile(r"os_error_code='?(\d+)")


def _disk_error(error: BaseException) -> OSError | None:
  """The OSError of a disk problem in `error` or its causes (orbax wraps them), if any."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
      return error
    match = _TENSORSTORE_ERRNO.search(str(error))
    if match and int(match.group(1)) in _DISK_ERRNOS:
      code = int(match.group(1))
      return OSError(code, os.strerror(code))
    error = error.__cause__ or error.__context__
  return None


def quiet_background_errors() -> None:
  """Keep orbax's writer threads from printing tracebacks after a failed write.

  When a save fails (a full disk), tensorstore's threads still call back into
  orbax's closed event loop, and Python prints each failure; the one error
  that matters reaches the caller and is reported as one line.
  """
  def is_noise(value) -> bool:
    return isinstance(value, RuntimeError) and 'Event loop is closed' in str(value)

  previous = sys.excepthook, sys.unraisablehook, threading.excepthook
  sys.excepthook = lambda kind, value, tb: None if is_noise(value) else previous[0](kind, value, tb)
  sys.unraisablehook = lambda info: None if is_noise(info.exc_value) else previous[1](info)
  threading.excepthook = lambda args: None if is_noise(args.exc_value) else previous[2](args)


def _disk_message(error: OSError, folder: str | None) -> str:
  if error.filename:
    where = f': {error.filename}'
  else:  # Errors raised in orbax's writer threads lose the path.
    where = f' (while writing to {folder})' if folder else ''
  return f'{error.strerror or error}{where}'


def run_reporting_errors(run: Callable[[], object], verbose: bool = False,
                         folder: str | None = None) -> int:
  """Call `run`; returns the exit code after printing a user's error as one line.

  `folder` is where the command writes, named when a disk error lost its path.
  """
  try:
    run()
  except UserError as error:
    if verbose:
      traceback.print_exc()
    print(f'error: {error}', file=sys.stderr)
    return error.exit_code
  except KeyboardInterrupt:  # Ctrl-C outside a training loop (while loading, say).
    if verbose:
      traceback.print_exc()
    print('error: interrupted', file=sys.stderr)
    return interrupt.EXIT_CODE
  except Exception as error:  # pylint: disable=broad-except
    disk = _disk_error(error)
    if disk is None or verbose:
      raise
    print(f'error: {_disk_message(disk, folder)}', file=sys.stderr)
    return 1
  return 0


def one_line(error: BaseException) -> str:
  """The message of `error` on one line."""
  # ml_collections raises AttributeError(KeyError(message)) for a mistyped field.
  while isinstance(error, (KeyError, AttributeError)) and error.args and isinstance(
      error.args[0], KeyError):
    error = error.args[0]
  if isinstance(error, KeyError) and error.args and isinstance(error.args[0], str):
    text = error.args[0]  # str(KeyError) would be the repr of its message.
  else:
    text = str(error)
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  return ' '.join(lines) if lines else type(error).__name__


RUN_MODES = ('eval', 'recommend', 'export')  # Modes that read a trained run folder.


def _flag_value(argv: list[str], name: str) -> str | None:
  """The value of --name=V or --name V in argv (the last one wins), or None."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def with_run_config(argv: list[str], run_config_file: str) -> list[str]:
  """argv with --config=<run_config_file>:<workdir> added for a run mode that has no --config.

  eval, recommend and export then use the run's own saved config (configs/run.py).
  """
  has_config = any(arg == '--config' or arg.startswith('--config=') for arg in argv)
  workdir = _flag_value(argv, 'workdir')
  if has_config or workdir is None or _flag_value(argv, 'mode') not in RUN_MODES:
    return argv
  return argv[:1] + [f'--config={run_config_file}:{workdir}'] + argv[1:]


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; a bad flag, config file or override is one `error:` line."""
  try:
    remaining = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS.config is not None:
      # ml_collections reports a config file it could not load on first use only.
      flags.FLAGS.config.keys()
    return remaining
  except Exception as error:  # pylint: disable=broad-except
    # A config override is applied while parsing: a mistyped field raises a KeyError
    # or AttributeError from ml_collections, not a flags.Error.
    if '--verbose' in argv:
      raise
    print(f'error: {one_line(error)} (--help lists the flags; a config field is set as '
          '--config.SECTION.FIELD=VALUE)', file=sys.stderr)
    sys.exit(2)


def usage_error(message: str) -> int:
  """Prints a usage mistake as one `error:` line; returns the exit code (2, as a bad flag)."""
  print(f'error: {message}', file=sys.stderr)
  return 2


def exit_with(code: int) -> None:
  """Exit with `code`; after an error, without the noise of background threads.

  After a failed write (a full disk, say) orbax's writer threads print
  tracebacks of their own while the interpreter shuts down. Every file of a
  run is complete or atomically replaced by then, so an error exits at once.
  """
  if code == 0:
    sys.exit(0)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)
