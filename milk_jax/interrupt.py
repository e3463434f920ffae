"""Ctrl-C as a request: training stops at the next epoch boundary, after its checkpoint.

`main.py` runs a command inside `graceful()`; the training loop and the
experiment runner call `requested()` between epochs and runs. A second
Ctrl-C exits at once: the checkpoints already committed stay intact, since
orbax commits a checkpoint by renaming a complete folder.
"""

import contextlib
import os
import signal
import sys
import threading

EXIT_CODE = 130  # 128 + SIGINT, what shells report for a process ended by Ctrl-C.
_requested = threading.Event()


def requested() -> bool:
  return _requested.is_set()


def request() -> None:
  """Ask the running training to stop at the next epoch boundary (what Ctrl-C does)."""
  _requested.set()


def clear() -> None:
  _requested.clear()


def _handler(signum, frame) -> None:
  del signum, frame
  if _requested.is_set():
    print('\ninterrupted again: exiting now', file=sys.stderr, flush=True)
    os._exit(EXIT_CODE)  # Skips the exit handlers that would wait for the device.
  request()
  print('\ninterrupt: stopping after the current epoch and its checkpoint '
        '(Ctrl-C again to exit now)', file=sys.stderr, flush=True)


@contextlib.contextmanager
def graceful():
  """Within the block, the first SIGINT sets `requested()` instead of raising."""
  if threading.current_thread() is not threading.main_thread():
    yield  # Signal handlers can only be installed from the main thread.
    return
  previous = signal.signal(signal.SIGINT, _handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
    clear()
