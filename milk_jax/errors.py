"""The user-facing error types: a user's mistake or a damaged run folder, never a bug.

The command line prints any `UserError` as one `error: ...` line (the
traceback only with --verbose; a Ctrl-C stop, `Interrupted`, without the
`error:`) and exits with its `exit_code`.
"""


class UserError(Exception):
  """A problem the user can fix; the message names the file or field and what is wrong."""
  exit_code = 1


class ConfigError(UserError, ValueError):
  """A config value the code cannot honour, or a workdir that belongs to another run."""


class ConfigFileError(UserError):
  """A --config that names no config file, or an unknown dataset after its colon.

  Not a ValueError: ml_collections would fold a ValueError raised while
  loading a config file into a traceback of text. A bad flag: exit code 2.
  """
  exit_code = 2


class RunFolderError(UserError):
  """A run folder's file is damaged, or the folder is in use by another process."""


class DivergenceError(UserError):
  """Training diverged (non-finite loss, or far above its first value for several epochs)."""


class Interrupted(UserError):
  """Ctrl-C: training stopped after saving its state; the same command resumes it.

  Not a mistake: the command line prints its message without `error:`.
  """
  exit_code = 130


class DistributedError(UserError):
  """A multi-process run (--jax_distributed) that cannot start, or that lost a process."""


class DistributedFlagError(DistributedError):
  """A bad --coordinator_address, --num_processes, --process_id or --heartbeat_timeout."""
  exit_code = 2  # As any bad flag.
