"""Crash points for the fault-injection tests (tests/test_faults.py).

`MILK_JAX_CRASH_AT=NAME@EPOCH` kills the process with SIGKILL when the run
reaches crash point NAME at EPOCH: the same death as a power cut or an
out-of-memory kill, at a moment a test can choose. Unset, a crash point
costs one dictionary lookup.
"""

import os
import signal

ENV = 'MILK_JAX_CRASH_AT'


def crash_point(name: str, epoch: int) -> None:
  if armed(name, epoch):
    os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str, epoch: int) -> bool:
  """True when the run will crash at this point: callers flush what must be on disk first."""
  return os.environ.get(ENV) == f'{name}@{epoch}'
