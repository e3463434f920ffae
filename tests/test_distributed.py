"""Tests for milk_jax.distributed: the checks of its flags, and real multi-process runs.

The slow tests start `main.py --jax_distributed` as 2 processes x 2 CPU
devices on 127.0.0.1 (gloo collectives), one 4-device mesh, and compare them
with one process of 4 devices; they kill a process mid-training and time how
the other ends.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from milk_jax import distributed
from milk_jax.errors import DistributedFlagError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The default config, data-parallel, 4 epochs evaluated at 2 and 4 (a latest checkpoint each).
RUN = ['--config=configs/default.py', '--config.train.num_epochs=4',
       '--config.train.eval_every=2', '--config.train.data_parallel=True']
SHARDED = ['--config.train.shard_user_table=True']
SURVIVOR_SECONDS = 120  # How long the survivor of a killed process may take to exit.


def test_flags_fall_back_to_the_environment():
  environ = {'JAX_COORDINATOR_ADDRESS': 'node0:1234', 'JAX_NUM_PROCESSES': '4',
             'JAX_PROCESS_ID': '3'}
  assert distributed.settings(None, None, None, environ) == {
      'coordinator_address': 'node0:1234', 'num_processes': 4, 'process_id': 3}
  assert distributed.settings('10.0.0.1:99', 2, 1, environ) == {
      'coordinator_address': '10.0.0.1:99', 'num_processes': 2, 'process_id': 1}
  # Nothing given: JAX detects the cluster (SLURM, Open MPI, ...).
  assert distributed.settings(None, None, None, {}) == {
      'coordinator_address': None, 'num_processes': None, 'process_id': None}


@pytest.mark.parametrize('given, message', [
    (('node0', None, None), "--coordinator_address='node0': must be HOST:PORT"),
    (('node0:http', None, None), 'must be HOST:PORT'),
    (('node0:70000', None, None), 'must be HOST:PORT'),
    ((None, 0, None), '--num_processes=0: must be at least 1'),
    ((None, 2, 2), '--process_id=2: must be below --num_processes=2'),
    ((None, None, -1), '--process_id=-1: must be non-negative'),
])
def test_bad_flags_are_one_clear_error(given, message):
  with pytest.raises(DistributedFlagError, match=re.escape(message)):
    distributed.settings(*given, environ={})


def test_a_bad_environment_value_names_the_variable():
  with pytest.raises(DistributedFlagError, match="JAX_NUM_PROCESSES='two': must be an integer"):
    distributed.settings(None, None, None, {'JAX_NUM_PROCESSES': 'two'})


def test_coordinator_flags_need_jax_distributed(tmp_path):
  done = subprocess.run([sys.executable, 'main.py', '--config=configs/default.py',
                         f'--workdir={tmp_path}', '--num_processes=2'], cwd=REPO,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, capture_output=True,
                        text=True, timeout=120)
  assert done.returncode == 2, done.stderr
  assert done.stderr.strip().splitlines() == [
      'error: --coordinator_address, --num_processes, --process_id, --heartbeat_timeout need '
      '--jax_distributed']


# ----------------------------------------------------------- multi-process runs


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def _environment(devices: int, **extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('JAX_COORDINATOR', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID',
                              'SLURM_', 'OMPI_', 'MILK_JAX_'))}
  return {**env, **extra, 'JAX_PLATFORMS': 'cpu',
          'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}


class Processes:
  """`num` processes of one main.py command, each with its own stdout/stderr files."""

  def __init__(self, logs, workdir, args, num=2, **env):
    self.logs = logs
    port = _free_port()
    self.outputs = [(logs / f'{workdir.name}.{i}.out', logs / f'{workdir.name}.{i}.err')
                    for i in range(num)]
    self.procs = []
    for i, (out, err) in enumerate(self.outputs):
      flags = ([] if num == 1 else
               ['--jax_distributed', f'--coordinator_address=127.0.0.1:{port}',
                f'--num_processes={num}', f'--process_id={i}'])
      with open(out, 'w') as stdout, open(err, 'w') as stderr:
        self.procs.append(subprocess.Popen(
            [sys.executable, 'main.py', *args, f'--workdir={workdir}', *flags], cwd=REPO,
            env=_environment(4 // num, **env), stdout=stdout, stderr=stderr))

  def stdout(self, i):
    return self.outputs[i][0].read_text()

  def stderr(self, i):
    return self.outputs[i][1].read_text()

  def wait(self, timeout=300):
    try:
      return [proc.wait(timeout=timeout) for proc in self.procs]
    finally:
      self.kill()

  def kill(self):
    for proc in self.procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()


def _train(logs, workdir, args, num=2, **env):
  """Run to the end; fails with the processes' errors unless all exit 0."""
  processes = Processes(logs, workdir, args, num, **env)
  codes = processes.wait()
  assert codes == [0] * num, [processes.stderr(i)[-2000:] for i in range(num)]
  return processes


def _vectors(workdir):
  with np.load(workdir / 'vectors.npz') as saved:
    return {key: saved[key] for key in saved.files}


def _results(workdir):
  results = json.loads((workdir / 'results.json').read_text())
  return {split: results[split] for split in ('val', 'test', 'test_by_group')}


def _losses(workdir):
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return [r['loss'] for r in records if r['kind'] == 'train']


def _max_difference(a, b):
  return max(float(np.max(np.abs(a[key].astype(np.float64) - b[key]))) for key in a
             if a[key].dtype.kind == 'f')


def _metric_difference(a, b):
  flat_a, flat_b = {}, {}
  def flatten(tree, into, prefix=''):
    for key, value in tree.items():
      if isinstance(value, dict):
        flatten(value, into, f'{prefix}{key}.')
      else:
        into[prefix + key] = value
  flatten(a, flat_a)
  flatten(b, flat_b)
  assert flat_a.keys() == flat_b.keys()
  return max(abs(flat_a[k] - flat_b[k]) for k in flat_a)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """{name: (workdir, Processes)}: one process of 4 devices; 2 of 2, replicated and sharded."""
  root = tmp_path_factory.mktemp('distributed')
  finished = {}
  for name, args, num in (('one_process', RUN, 1), ('two_processes', RUN, 2),
                          ('two_processes_sharded', RUN + SHARDED, 2)):
    tic = time.perf_counter()
    finished[name] = root / name, _train(root, root / name, args, num)
    print(f'{name}: {time.perf_counter() - tic:.1f}s')
  return finished


@pytest.mark.slow  # Three runs of 4 epochs, 1 and 2 processes: about 100 s on 2 cores.
@pytest.mark.parametrize('name', ['two_processes', 'two_processes_sharded'])
def test_two_processes_train_as_one_process_of_four_devices(runs, name):
  one, two = runs['one_process'][0], runs[name][0]
  # The same 4-device mesh, batch split and math; only the gradient all-reduce differs
  # (gloo over TCP across processes, XLA's within one), so sums may round differently.
  vectors = _max_difference(_vectors(one), _vectors(two))
  losses = np.max(np.abs(np.subtract(_losses(one), _losses(two))))
  metrics = _metric_difference(_results(one), _results(two))
  print(f'{name}: max vector difference {vectors:.3g}, loss {losses:.3g}, metric {metrics:.3g}')
  # Measured: 1.2e-6, 6e-8 and 0 (3.4e-6 for the vectors with the device sampler).
  assert vectors < 2e-5 and losses < 1e-6 and metrics < 1e-3


@pytest.mark.slow  # Uses the runs above.
def test_only_process_zero_writes_the_run_files(runs):
  workdir, processes = runs['two_processes']
  # Each epoch's records once: process 1 appended nothing (epochs 1-4, evaluations 0, 2, 4).
  assert len(_losses(workdir)) == 4
  assert len((workdir / 'metrics.jsonl').read_text().splitlines()) == 7
  assert (workdir / '.lock').read_text().startswith(f'pid {processes.procs[0].pid} ')
  assert not list(workdir.glob('*.tmp'))
  assert 'training curves:' in processes.stdout(0) and 'training curves:' not in (
      processes.stdout(1))
  for i in range(2):
    assert not processes.stderr(i).strip(), processes.stderr(i)[-2000:]


@pytest.mark.slow  # Two more 2-process runs, stopped at epoch 2 and resumed: about 60 s.
def test_two_processes_resume_exactly(runs, tmp_path):
  workdir = tmp_path / 'resumed'
  # Both processes die (SIGKILL) right after the latest checkpoint of epoch 2.
  stopped = Processes(tmp_path, workdir, RUN + SHARDED, MILK_JAX_CRASH_AT='after_latest@2')
  assert stopped.wait() == [-signal.SIGKILL] * 2
  assert sorted(os.listdir(workdir / 'checkpoints' / 'latest')) == ['2']
  resumed = _train(tmp_path, workdir, RUN + SHARDED)
  assert 'resumed from' in resumed.stdout(0) and 'at epoch 2' in resumed.stdout(1)
  uninterrupted = runs['two_processes_sharded'][0]
  for key, value in _vectors(uninterrupted).items():
    np.testing.assert_array_equal(_vectors(workdir)[key], value)
  assert _results(workdir) == _results(uninterrupted)
  assert _losses(workdir) == _losses(uninterrupted)


def _signal_after_epoch_3(tmp_path, victim, signum):
  """A 2-process run of the default config; `signum` to process `victim` once it logs epoch 3.

  Returns the processes and the moment the signal was sent.
  """
  processes = Processes(tmp_path, tmp_path / 'run', ['--config=configs/default.py',
                                                     '--config.train.data_parallel=True',
                                                     '--config.train.sampler=device'])
  deadline = time.monotonic() + 300
  while 'epoch 3/' not in processes.stdout(victim):
    assert time.monotonic() < deadline and processes.procs[victim].poll() is None, (
        processes.stderr(victim)[-2000:])
    time.sleep(0.1)
  processes.procs[victim].send_signal(signum)
  return processes, time.monotonic()


@pytest.mark.slow  # Two 2-process runs killed after epoch 3: about 60 s.
@pytest.mark.parametrize('victim', [1, 0])
def test_a_killed_process_ends_the_other_in_bounded_time(tmp_path, victim):
  processes, killed = _signal_after_epoch_3(tmp_path, victim, signal.SIGKILL)
  survivor = 1 - victim
  try:
    code = processes.procs[survivor].wait(timeout=SURVIVOR_SECONDS)
    seconds = time.monotonic() - killed
  finally:
    processes.kill()
  errors = processes.stderr(survivor)
  one_line = errors.startswith('error: a process of the distributed run stopped') and len(
      errors.strip().splitlines()) == 1
  print(f'killed process {victim}: process {survivor} exited {code} after {seconds:.1f}s '
        f'({"one line" if one_line else "JAX runtime abort"})')
  assert code != 0 and seconds < SURVIVOR_SECONDS
  # Either a collective of the survivor fails (its peer's connection closed): one line, exit
  # code 1, and no wait for the lost process at exit. Or JAX's runtime ends it with its own
  # fatal message (SIGABRT), which milk-jax cannot shorten: at once when process 0, the
  # coordinator, died, else when the dead process misses its heartbeats (--heartbeat_timeout).
  assert (one_line and code == 1) or 'another task died' in errors, errors[-3000:]


@pytest.mark.slow  # One 2-process run: about 30 s.
def test_ctrl_c_in_one_process_stops_all_at_the_same_epoch(tmp_path):
  processes, _ = _signal_after_epoch_3(tmp_path, 1, signal.SIGINT)
  codes = processes.wait(timeout=SURVIVOR_SECONDS)
  assert codes == [130, 130], [processes.stderr(i)[-2000:] for i in range(2)]
  stops = [re.search(r'^interrupted at epoch (\d+);', processes.stderr(i), re.MULTILINE)
           for i in range(2)]
  assert stops[0] and stops[1] and stops[0].group(1) == stops[1].group(1)
  assert stops[0].group(1) in os.listdir(tmp_path / 'run' / 'checkpoints' / 'latest')
