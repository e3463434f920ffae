"""What the command line does with flags, output and errors: one `error: ...` line, not a traceback.

A user's mistake (milk_jax.errors.UserError: bad config or data, a run
folder of another run or in use, a damaged file, divergence), a bad flag or
config file, or a failing disk (full, read-only, no permission) is printed
as one line and ends with a non-zero exit code; a Ctrl-C stop is one line
without `error:`; anything else is a bug and keeps its traceback. `verbose`
shows the traceback in every case. Progress goes to stdout, the rest to stderr.
"""

import errno
import importlib
import logging
import os
import re
import sys
import threading
import traceback
from typing import Callable

from absl import flags
from absl import logging as absl_logging

from milk_jax import interrupt
from milk_jax.errors import ConfigFileError
from milk_jax.errors import Interrupted
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


class _Below(logging.Filter):
  """Passes records below `level`: INFO goes to stdout, warnings to stderr."""

  def __init__(self, level: int):
    super().__init__()
    self.level = level

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno < self.level


class _LevelPrefix(logging.Formatter):
  """`warning: message`, as the `error: message` lines."""

  def format(self, record: logging.LogRecord) -> str:
    return f'{record.levelname.lower()}: {record.getMessage()}'


def configure_output(verbose: bool = False) -> None:
  """The command line's output: progress on stdout, warnings and errors on stderr.

  The 'milk_jax' logger prints progress as `HH:MM:SS message` on stdout and
  warnings as `warning: message` on stderr, without absl's level, thread-id
  and file prefix; `error: ...` lines go to stderr too. Other libraries'
  INFO lines (orbax's, jax's probe of a TPU backend a CPU machine lacks, which
  reads like an error) are hidden; --verbose shows them, the probe excepted.
  """
  absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
  # The probe of optional backends (tpu on a CPU machine) logs its failure at INFO.
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  for name in ('absl', 'asyncio'):  # asyncio: orbax's failed writer tasks, told once as an error.
    logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)
  progress = logging.StreamHandler(sys.stdout)
  progress.addFilter(_Below(logging.WARNING))
  progress.setFormatter(logging.Formatter('%(asctime)s %(message)s', datefmt='%H:%M:%S'))
  warnings = logging.StreamHandler(sys.stderr)
  warnings.setLevel(logging.WARNING)
  warnings.setFormatter(_LevelPrefix())
  logger = logging.getLogger('milk_jax')
  logger.handlers = [progress, warnings]
  logger.setLevel(logging.INFO)
  logger.propagate = False  # Not again through absl's handler on the root logger.


def _disk_message(error: OSError, folder: str | None) -> str:
  if error.filename:
    where = f': {error.filename}'
  else:  # Errors raised in orbax's writer threads lose the path.
    where = f' (while writing to {folder})' if folder else ''
  return f'{error.strerror or error}{where}'


# How JAX's runtime reports a lost process of a multi-process run: a collective whose peer
# closed its connection (gloo on CPU), a barrier or heartbeat of the coordination service.
_LOST_PROCESS = re.compile(r'gloo|connection (closed|reset)|heartbeat|barrier|coordination|'
                           r'UNAVAILABLE|DEADLINE_EXCEEDED', re.IGNORECASE)


def _lost_process(error: BaseException) -> BaseException | None:
  """The innermost runtime error in `error` and its causes that says a process was lost.

  Innermost: orbax wraps the runtime's words in a TimeoutError of its own.
  """
  seen, found = set(), None
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if (type(error).__name__ in ('JaxRuntimeError', 'XlaRuntimeError', 'TimeoutError')
        and _LOST_PROCESS.search(str(error))):
      found = error
    error = error.__cause__ or error.__context__
  return found


def run_reporting_errors(run: Callable[[], object], verbose: bool = False,
                         folder: str | None = None, distributed: bool = False) -> int:
  """Call `run`; returns the exit code after printing a user's error as one line.

  `folder` is where the command writes, named when a disk error lost its path.
  `distributed`: this is one process of a multi-process run, where a runtime
  error that says another process was lost is one line too (exit code 1), so
  that the caller exits at once instead of waiting for the lost process.
  """
  try:
    run()
  except Interrupted as stop:  # Not a mistake: no `error:` prefix.
    if verbose:
      traceback.print_exc()
    print(stop, file=sys.stderr)
    return stop.exit_code
  except UserError as error:
    if verbose:
      traceback.print_exc()
    print(f'error: {error}', file=sys.stderr)
    return error.exit_code
  except KeyboardInterrupt:  # Ctrl-C outside a training loop (while loading, say).
    if verbose:
      traceback.print_exc()
    print('interrupted', file=sys.stderr)
    return interrupt.EXIT_CODE
  except Exception as error:  # pylint: disable=broad-except
    lost = _lost_process(error) if distributed else None
    if lost is not None:
      if verbose:
        traceback.print_exc()
      print(f'error: a process of the distributed run stopped, so this one cannot go on (see '
            f'the others\' output for why): {one_line(lost)[:300]}', file=sys.stderr)
      return 1
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

  eval, recommend and export then use the run's own saved config (configs/run.py),
  and fields lists it.
  """
  has_config = any(arg == '--config' or arg.startswith('--config=') for arg in argv)
  workdir = _flag_value(argv, 'workdir')
  if has_config or workdir is None or _flag_value(argv, 'mode') not in RUN_MODES + ('fields',):
    return argv
  return argv[:1] + [f'--config={run_config_file}:{workdir}'] + argv[1:]


# absl's help flags (and the -h users expect); absl exits 1 after printing the help.
_HELP_FLAGS = {'--help': '--help', '-help': '--help', '-h': '--help', '-?': '--help',
               '--helpshort': '--helpshort', '--helpfull': '--helpfull',
               '--helpxml': '--helpxml'}
_NOT_CONFIGS = ('__init__.py', 'base.py', 'run.py')  # Shared parts, not configs to pick.


def _config_files(folder: str) -> list[str]:
  """The config files (NAME.py with a get_config) directly in `folder`, sorted."""
  try:
    files = sorted(os.listdir(folder))
  except OSError:
    return []
  found = []
  for name in files:
    if name.endswith('.py') and name not in _NOT_CONFIGS:
      try:
        with open(os.path.join(folder, name), encoding='utf-8') as f:
          if 'def get_config(' in f.read():
            found.append(name)
      except (OSError, UnicodeDecodeError):
        continue
  return found


def _missing_config_file(argv: list[str]) -> ConfigFileError | None:
  """A --config that names no file, said in our words with the configs there are.

  ml_collections would defer it and report it in its own words on first use.
  """
  value = _flag_value(argv, 'config')
  if value is None:
    return None
  path = value.split(':', 1)[0]
  if os.path.isfile(path):
    return None
  folder = os.path.dirname(path)
  names = _config_files(folder or '.')
  there = f'; {folder or "."}/ has {", ".join(names)}' if names else ''
  return ConfigFileError(f'{path}: no such config file{there}')


def _flag_error_message(error: BaseException, argv: list[str]) -> str:
  """One line for a bad flag, override or config file, without ml_collections' wrapping.

  A mistyped flag or field gets the hint of how flags are written; a config
  file that fails to load does not (the hint would not help).
  """
  text = str(error)
  config = _flag_value(argv, 'config') or '--config'
  if 'Configuration is not available because of an earlier failure to load' in text:
    return f'{config}: {one_line(error.__cause__ or error)}'  # The config file's own error.
  if isinstance(error, SyntaxError) and error.filename and config.startswith(error.filename):
    return f'{config}: {one_line(error)}'  # The config file is not Python.
  if 'Error whilst parsing config file' in text:
    # get_config() raised: ml_collections folded its traceback into the message; keep the
    # error line at its end.
    return f'{config}: get_config() failed: {text.strip().splitlines()[-1].strip()}'
  return (f'{one_line(error)} (--help lists the flags; a config field is set as '
          '--config.SECTION.FIELD=VALUE)')


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; a bad flag, config file or override is one `error:` line.

  --help prints the flags and exits 0 before any config is read; a stray
  positional argument is a usage error (exit 2), not the whole help text.
  """
  asked = [_HELP_FLAGS[arg] for arg in argv[1:] if arg in _HELP_FLAGS]
  if asked:
    try:
      flags.FLAGS(argv[:1] + asked[:1])  # Prints the help and raises SystemExit(1).
    except SystemExit:
      pass
    sys.exit(0)
  verbose = '--verbose' in argv
  try:
    missing = _missing_config_file(argv)
    if missing is not None:
      raise missing
    remaining = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS.config is not None:
      # ml_collections reports a config file it could not load on first use only.
      flags.FLAGS.config.keys()
  except UserError as error:  # Raised by a config file: configs/run.py, a dataset's name.
    if verbose:
      raise
    print(f'error: {error}', file=sys.stderr)
    sys.exit(error.exit_code)
  except Exception as error:  # pylint: disable=broad-except
    # A config override is applied while parsing: a mistyped field raises a KeyError
    # or AttributeError from ml_collections, not a flags.Error.
    if verbose:
      raise
    print(f'error: {_flag_error_message(error, argv)}', file=sys.stderr)
    sys.exit(2)
  if len(remaining) > 1:
    print(f'error: unexpected argument {remaining[1]!r}: every argument is a flag, '
          '--NAME=VALUE (--help lists them)', file=sys.stderr)
    sys.exit(2)
  return remaining


def entry_point(spec: str) -> Callable:
  """The function that 'package.module:function' names, its module imported now."""
  module, name = spec.split(':')
  return getattr(importlib.import_module(module), name)


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
