"""Start one process of a multi-process (multi-host) run: `--jax_distributed` on the command line.

Every process runs the same command; `jax.distributed.initialize` joins them
into one runtime whose devices form one mesh (milk_jax/sharding.py). Where
the coordinator is comes from the flags, else from JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID, else from the cluster's own environment
(JAX detects SLURM, Open MPI and others). A process that stops sending
heartbeats for `heartbeat_timeout` seconds is taken as dead, and the runtime
ends the others; a broken collective ends them sooner (milk_jax/cli.py prints
it as one line). On CPU the processes reduce over TCP with gloo.
"""

import os
from typing import Mapping

import jax

from milk_jax.errors import DistributedError
from milk_jax.errors import DistributedFlagError

ENV_VARS = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS',
            'num_processes': 'JAX_NUM_PROCESSES', 'process_id': 'JAX_PROCESS_ID'}
# A coordinator that is not up yet (its host still starting) is retried for this long.
INITIALIZATION_TIMEOUT = 300


def _integer(name: str, value: str | int | None) -> int | None:
  """A flag's value, or its environment variable's text, as an int."""
  if value is None or isinstance(value, int):
    return value
  try:
    return int(value)
  except ValueError:
    raise DistributedFlagError(f'{ENV_VARS[name]}={value!r}: must be an integer') from None


def settings(coordinator_address: str | None, num_processes: int | None,
             process_id: int | None, environ: Mapping[str, str] | None = None
             ) -> dict[str, str | int | None]:
  """The coordinator settings: each flag, else its environment variable, else None.

  None leaves the value to JAX's detection of the cluster (SLURM, Open MPI,
  ...). Raises DistributedFlagError naming the flag for a value that cannot
  work: a coordinator that is not host:port, a count below 1, an index
  outside [0, num_processes).
  """
  environ = os.environ if environ is None else environ
  given = {'coordinator_address': coordinator_address, 'num_processes': num_processes,
           'process_id': process_id}
  values = {name: environ.get(ENV_VARS[name]) if value is None else value
            for name, value in given.items()}
  values['num_processes'] = _integer('num_processes', values['num_processes'])
  values['process_id'] = _integer('process_id', values['process_id'])
  address = values['coordinator_address']
  if address is not None:
    host, _, port = address.rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise DistributedFlagError(f'--coordinator_address={address!r}: must be HOST:PORT, the '
                                 'address of process 0 and a free port there')
  count, index = values['num_processes'], values['process_id']
  if count is not None and count < 1:
    raise DistributedFlagError(f'--num_processes={count}: must be at least 1')
  if index is not None and (index < 0 or (count is not None and index >= count)):
    bound = f'below --num_processes={count}' if count is not None else 'non-negative'
    raise DistributedFlagError(f'--process_id={index}: must be {bound} (process 0 hosts the '
                               'coordinator)')
  return values


def start(coordinator_address: str | None = None, num_processes: int | None = None,
          process_id: int | None = None, heartbeat_timeout: int = 60) -> None:
  """Join this process to the distributed run; call before anything else touches JAX.

  Raises:
    DistributedFlagError: a bad flag or environment value.
    DistributedError: the coordinator is not found (no flags and no cluster detected) or
      cannot be reached within INITIALIZATION_TIMEOUT seconds.
  """
  if heartbeat_timeout < 1:
    raise DistributedFlagError(f'--heartbeat_timeout={heartbeat_timeout}: must be at least 1 '
                               'second')
  values = settings(coordinator_address, num_processes, process_id)
  # CPU devices of different processes reduce over TCP; the default CPU collectives are
  # within one process only. Other platforms keep their own (NCCL on GPUs).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(**values, initialization_timeout=INITIALIZATION_TIMEOUT,
                               heartbeat_timeout_seconds=heartbeat_timeout)
  except (ValueError, RuntimeError) as error:  # JaxRuntimeError is a RuntimeError.
    named = ', '.join(f'--{name}' for name, value in values.items() if value is None)
    hint = (f'; {named} not given and no cluster (SLURM, Open MPI, ...) detected'
            if named else '')
    raise DistributedError(f'--jax_distributed: could not start ({_first_line(error)}){hint}'
                           ) from error


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0][:300] if text else type(error).__name__
