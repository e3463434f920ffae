"""Where the shared datasets live: ../shared/data beside the repository."""

import os

SHARED_DATA = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data'))


def shared_dataset(name: str) -> str:
  return os.path.join(SHARED_DATA, name)
