"""Fault injection through the command line: kills, Ctrl-C, two processes, damaged files.

Every run here is a real `python main.py` process. A killed run is started
again with the same command and must end with the results and the training
log of a run that was never interrupted. Slow (about two minutes on two
cores): run with `pytest -m slow`, or the full suite.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest

from milk_jax import runfolder

pytestmark = pytest.mark.slow

TINY = ['--config=configs/default.py', '--config.data.synthetic.num_users=150',
        '--config.data.synthetic.num_items=120', '--config.model.embed_dim=8',
        '--config.train.batch_size=256', '--config.train.num_epochs=6',
        '--config.train.eval_every=1', '--config.train.patience=10']
# The same run, long enough to be interrupted while it trains.
LONG = TINY + ['--config.train.num_epochs=400', '--config.train.patience=400',
               '--config.data.synthetic.num_users=2000', '--config.data.synthetic.num_items=1500']


def _wait_for_epoch(workdir, epoch, process, timeout=240):
  """Wait until the run has logged a training epoch >= `epoch`."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    assert process.poll() is None, process.communicate()[1][-3000:]
    path = os.path.join(workdir, 'metrics.jsonl')
    records = runfolder.read_log(path) if os.path.exists(path) else []
    if any(r['kind'] == 'train' and r['epoch'] >= epoch for r in records):
      return
    time.sleep(0.2)
  raise AssertionError(f'no epoch {epoch} within {timeout}s')


@pytest.fixture(scope='module')
def reference(tmp_path_factory, cli):
  """The uninterrupted run that every interrupted one must end up equal to."""
  workdir = str(tmp_path_factory.mktemp('reference') / 'run')
  done = cli.run(workdir, *TINY)
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir


def test_killed_at_every_crash_point_resumes_to_the_uninterrupted_run(tmp_path, reference, cli):
  workdir = str(tmp_path / 'run')
  latest = os.path.join(workdir, 'checkpoints', 'latest')
  best = os.path.join(workdir, 'checkpoints', 'best')

  # Killed while appending epoch 3's record: the log ends in half a line.
  assert cli.run(workdir, *TINY, crash_at='log_append@3').returncode == -signal.SIGKILL
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert not f.read().endswith('\n')
  # Killed while dropping that tail: the new log was written aside, not yet renamed.
  assert cli.run(workdir, *TINY, crash_at='log_rewrite@2').returncode == -signal.SIGKILL
  assert os.path.exists(os.path.join(workdir, 'metrics.jsonl.tmp'))
  # Killed between the two saves of epoch 4: best/4 is on disk, latest/4 is not.
  done = cli.run(workdir, *TINY, crash_at='between_saves@4')
  assert done.returncode == -signal.SIGKILL
  assert 'half-written last line' in done.stderr
  assert '4' not in os.listdir(latest)
  scores = [r['val']['ndcg@20'] for r in cli.log(reference) if r['kind'] == 'eval']  # Epochs 0...
  best_by_4 = max(range(5), key=lambda e: scores[e])  # The first maximum: ties do not improve.
  assert [d for d in os.listdir(best) if d.isdigit()] == [str(best_by_4)]
  # Killed after latest/5 landed; its best save is then lost, as if still in flight.
  assert cli.run(workdir, *TINY, crash_at='after_latest@5').returncode == -signal.SIGKILL
  assert '5' in os.listdir(latest)
  shutil.rmtree(best)
  done = cli.run(workdir, *TINY)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'checkpoints/best is missing' in done.stderr
  cli.assert_same_run(workdir, reference)


def test_killed_at_random_moments_resumes_to_the_uninterrupted_run(tmp_path, reference, cli):
  workdir = str(tmp_path / 'run')
  rng = random.Random(0)
  for _ in range(3):
    process = cli.start(workdir, *TINY)
    time.sleep(rng.uniform(3.0, 9.0))  # Import, data, compile and epochs all take seconds.
    process.kill()
    process.communicate()
  done = cli.run(workdir, *TINY)
  assert done.returncode == 0, done.stderr[-3000:]
  cli.assert_same_run(workdir, reference)


def test_a_second_process_on_a_run_folder_is_refused(tmp_path, cli):
  workdir = str(tmp_path / 'run')
  first = cli.start(workdir, *LONG)
  try:
    _wait_for_epoch(workdir, 1, first)
    second = cli.run(workdir, *LONG)
    assert second.returncode == 1
    line = cli.one_error_line(second)
    assert f'{workdir} is in use by another process (pid {first.pid} on ' in line
  finally:
    first.kill()
    first.communicate()


def test_ctrl_c_stops_after_the_epoch_checkpoint_and_the_same_command_resumes(tmp_path, cli):
  workdir = str(tmp_path / 'run')
  process = cli.start(workdir, *LONG)
  _wait_for_epoch(workdir, 2, process)
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr[-3000:]
  assert 'Traceback' not in stderr and 'error:' not in stderr  # A stop, not a mistake.
  line = [l for l in stderr.splitlines() if l.startswith('interrupted at epoch ')][-1]
  epoch = int(line.split('interrupted at epoch ')[1].split(';')[0])
  assert line.endswith('run the same command to resume')
  latest = sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints', 'latest'))
                  if d.isdigit())
  assert latest[-1] == epoch
  # The same command continues from there (stopped again by a short cap).
  done = cli.run(workdir, *LONG, f'--config.train.num_epochs={epoch + 2}')
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'resumed from {workdir} at epoch {epoch}' in done.stdout  # Progress: stdout.
  assert cli.results(workdir)['epochs_run'] == epoch + 2


def test_a_second_ctrl_c_exits_at_once(tmp_path, cli):
  workdir = str(tmp_path / 'run')
  process = cli.start(workdir, *LONG)
  _wait_for_epoch(workdir, 1, process)
  process.send_signal(signal.SIGINT)
  time.sleep(0.05)
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 130
  assert 'Traceback' not in stderr


def _damage(path):
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0xFF
  open(path, 'wb').write(bytes(data))


def _array_files(checkpoint_dir):
  found = []
  for root, _, files in os.walk(checkpoint_dir):
    if os.path.basename(root) == 'd' and 'ocdbt.process_0' in root:
      found += [os.path.join(root, f) for f in files]
  return found


def test_damaged_files_fall_back_or_fail_with_one_line(tmp_path, reference, cli):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  latest = os.path.join(workdir, 'checkpoints', 'latest')
  newest = max(int(d) for d in os.listdir(latest) if d.isdigit())
  for path in _array_files(os.path.join(latest, str(newest))):
    _damage(path)
  # A damaged newest latest checkpoint: the run falls back to the one before, saying so.
  done = cli.run(workdir, *TINY)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'falling back to {latest}/' in done.stderr
  cli.assert_same_run(workdir, reference)

  # A damaged best checkpoint and no intact latest one: --mode=eval names the file.
  best = os.path.join(workdir, 'checkpoints', 'best')
  for path in _array_files(best) + _array_files(latest):
    _damage(path)
  done = cli.run(workdir, *TINY, '--mode=eval')
  assert done.returncode == 1
  assert best in cli.one_error_line(done)

  # A damaged config.json: one line naming it.
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write('{"seed": 0, "da')
  done = cli.run(workdir, *TINY)
  assert done.returncode == 1
  assert 'config.json is damaged (not valid JSON' in cli.one_error_line(done)


@pytest.mark.parametrize('args, message', [
    (['--config.train.learning_rate=100', '--config.train.num_epochs=40'],
     'training diverged at epoch'),
    (['--config.train.learning_rate=-1'], 'config.train.learning_rate=-1.0: must be positive'),
    (['--config.train.num_epochs=0'], 'config.train.num_epochs=0: must be at least 1'),
    (['--config.train.betta=1'], 'Did you mean "beta"'),
])
def test_user_errors_are_one_line(tmp_path, args, message, cli):
  done = cli.run(str(tmp_path / 'run'), *TINY, *args)
  assert done.returncode in (1, 2)
  assert message in cli.one_error_line(done)


def test_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path, cli):
  mount = tmp_path / 'small_disk'
  mount.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=192k', 'tmpfs', str(mount)],
                    capture_output=True).returncode != 0:
    pytest.skip('cannot mount a small tmpfs here (needs root)')
  try:
    done = cli.run(str(mount / 'run'), *TINY)
    assert done.returncode == 1
    assert 'No space left on device' in cli.one_error_line(done)
    json.loads((mount / 'run' / 'config.json').read_text())  # Still whole.
  finally:
    subprocess.run(['umount', str(mount)], check=True)
