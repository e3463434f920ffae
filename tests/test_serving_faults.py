"""Serving beside training, at the process level: `python main.py --mode=recommend` processes
next to a trainer on the same run, next to each other, killed, and on hostile files.

Serving reads a run folder without writing to it (milk_jax/api.py), so a
trainer extending the run must end exactly as if alone. Slow (real
processes): run with `pytest -m slow`, or the full suite.
"""

import json
import os
import shutil
import signal

import numpy as np
import pytest

from milk_jax import runfolder
from milk_jax import serving

pytestmark = pytest.mark.slow

TINY = ['--config=configs/default.py', '--config.data.synthetic.num_users=150',
        '--config.data.synthetic.num_items=120', '--config.model.embed_dim=8',
        '--config.train.batch_size=256', '--config.train.num_epochs=6',
        '--config.train.eval_every=1', '--config.train.patience=400']
EXTENDED = TINY + ['--config.train.num_epochs=160']  # The same run, trained on.


def _recommend_args(items, output, *more):
  return ['--mode=recommend', f'--config.recommend.new_items={items}',
          f'--config.recommend.output={output}', *more]


def _names(folder, snapshot):
  """The paths under `folder`, but orbax's data files (`.../d/<content hash>`) left out."""
  return sorted(path for path in snapshot(folder)
                if os.path.basename(os.path.dirname(path)) != 'd')


def _new_items(folder, workdir, count=40, seed=0):
  """A folder of `count` new items with random features of the run's widths."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder)
  with np.load(os.path.join(workdir, serving.SERVING_FILE)) as saved:
    names, dims = saved['modality_names'].tolist(), saved['feature_dims'].tolist()
  for name, dim in zip(names, dims):
    np.save(os.path.join(folder, f'{name}_feat.npy'),
            rng.normal(size=(count, dim)).astype(np.float32))
  with open(os.path.join(folder, 'item_ids.txt'), 'w') as f:
    f.write(''.join(f'new_{i}\n' for i in range(count)))
  return folder


@pytest.fixture(scope='module')
def trained(tmp_path_factory, cli):
  """A finished 6-epoch run and a folder of new items beside it."""
  root = tmp_path_factory.mktemp('serving')
  workdir = str(root / 'run')
  done = cli.run(workdir, *TINY)
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir, _new_items(str(root / 'new_items'), workdir)


def _copy(trained, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained[0], workdir)
  return workdir


def test_recommend_beside_a_training_run_leaves_it_untouched(trained, tmp_path, cli, snapshot):
  reference = str(tmp_path / 'reference')
  shutil.copytree(trained[0], reference)
  done = cli.run(reference, *EXTENDED)  # Extended alone.
  assert done.returncode == 0, done.stderr[-3000:]

  workdir = _copy(trained, tmp_path)
  trainer = cli.start(workdir, *EXTENDED)
  readers = []
  try:
    while trainer.poll() is None:  # Recommend in a loop for as long as the run trains on.
      output = str(tmp_path / f'top_{len(readers)}.tsv')
      readers.append(cli.run(workdir, *_recommend_args(trained[1], output)))
  finally:
    _, stderr = trainer.communicate(timeout=cli.TIMEOUT)
  assert trainer.returncode == 0, stderr[-3000:]
  assert readers, 'no recommend ran while the run trained'
  for done in readers:
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'ranking with epoch' in done.stdout  # Progress lines go to stdout.
  cli.assert_same_run(workdir, reference)
  # The same files in the end: no reader added, kept or removed any.
  assert _names(workdir, snapshot) == _names(reference, snapshot)


def test_serving_writes_nothing_into_the_run_folder(trained, tmp_path, cli, snapshot):
  """recommend and export (outputs elsewhere) leave every file as it was, orbax's temporary
  folders of a save in flight included, and take no lock."""
  workdir = _copy(trained, tmp_path)
  os.remove(os.path.join(workdir, runfolder.LOCK_FILE))  # The trainer's; a reader adds none.
  for which in ('best', 'latest'):  # What a trainer saving at this moment has on disk.
    os.makedirs(os.path.join(workdir, 'checkpoints', which, '99.orbax-checkpoint-tmp-1',
                             'arrays'))
  before = snapshot(workdir)
  done = cli.run(workdir, *_recommend_args(trained[1], str(tmp_path / 'top.tsv')))
  assert done.returncode == 0, done.stderr[-3000:]
  done = cli.run(workdir, '--mode=export', f'--config.export.output={tmp_path / "export"}',
                 f'--config.export.new_items={trained[1]}')
  assert done.returncode == 0, done.stderr[-3000:]
  assert snapshot(workdir) == before


def test_two_recommends_at_once_leave_one_whole_output(trained, tmp_path, cli):
  output = str(tmp_path / 'top.tsv')
  workdir, items = trained
  runs = {k: cli.start(workdir, *_recommend_args(items, output, f'--config.recommend.k={k}'))
          for k in (3, 5)}
  for k, process in runs.items():
    _, stderr = process.communicate(timeout=cli.TIMEOUT)
    assert process.returncode == 0, stderr[-3000:]
  with open(output) as f:
    lines = f.read().split('\n')[1:-1]
  ranks = {int(line.split('\t')[1]) for line in lines}
  assert ranks in ({1, 2, 3}, {1, 2, 3, 4, 5})  # One process's file, whole.
  assert len(lines) == 150 * max(ranks)
  assert not [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]


def test_a_killed_recommend_leaves_nothing_that_breaks_the_next(trained, tmp_path, cli):
  output = str(tmp_path / 'top.tsv')
  workdir, items = trained
  killed = cli.run(workdir, *_recommend_args(items, output), crash_at='write_file@0')
  assert killed.returncode == -signal.SIGKILL
  left = [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]
  assert len(left) == 1 and left[0].startswith('top.tsv.')  # Killed between write and rename.
  done = cli.run(workdir, *_recommend_args(items, output))
  assert done.returncode == 0, done.stderr[-3000:]
  assert not [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]


def test_a_fifo_feature_file_is_one_error_line(trained, tmp_path, cli):
  items = str(tmp_path / 'items')
  shutil.copytree(trained[1], items)
  os.remove(os.path.join(items, 'text_feat.npy'))
  os.mkfifo(os.path.join(items, 'text_feat.npy'))  # Opening it would block forever.
  done = cli.run(trained[0], *_recommend_args(items, str(tmp_path / 'top.tsv')))
  assert done.returncode == 1
  assert 'text_feat.npy: a FIFO (named pipe), not a regular file' in cli.one_error_line(done)


def _edit_config(workdir, field, value):
  path = os.path.join(workdir, runfolder.CONFIG_FILE)
  with open(path) as f:
    config = json.load(f)
  config['data'][field] = value
  with open(path, 'w') as f:
    json.dump(config, f)


def _edit_serving(workdir, edit_npz, change):
  edit_npz(os.path.join(workdir, serving.SERVING_FILE), change)


@pytest.mark.parametrize('damage, message', [
    (lambda w, _: _edit_config(w, 'item_ids_file', '/etc/hostname'),
     "config.json: data.item_ids_file='/etc/hostname' must be a file name inside"),
    (lambda w, _: _edit_config(w, 'availability_file', '../../availability.npy'),
     "config.json: data.availability_file='../../availability.npy' must be a file name inside"),
    (lambda w, _: open(os.path.join(w, 'users.tsv'), 'wb').write(b'index\tid\n0\t\xff\xfe\n'),
     'users.tsv: not UTF-8 text'),
    (lambda w, edit: _edit_serving(w, edit, lambda a: a.pop('feature_dims')),
     "serving.npz: no 'feature_dims' array"),
    (lambda w, edit: _edit_serving(
        w, edit, lambda a: a.update(fill_0=np.zeros((3, 3), np.float32))),
     "serving.npz: 'fill_0' is float32 of shape (3, 3), expected shape (64,)"),
    (lambda w, edit: _edit_serving(w, edit, lambda a: a.update(map_x_1_weights=np.zeros(2))),
     "serving.npz: unknown array 'map_x_1_weights'"),
])
def test_a_crafted_run_folder_is_one_error_line(trained, tmp_path, damage, message, cli,
                                                edit_npz):
  workdir = _copy(trained, tmp_path)
  damage(workdir, edit_npz)
  done = cli.run(workdir, *_recommend_args(trained[1], str(tmp_path / 'top.tsv')))
  assert done.returncode == 1
  assert message in cli.one_error_line(done)
