"""The command line end to end, as a user types it."""

import json
import os
import random
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.data.synthetic.num_users=150', '--config.data.synthetic.num_items=120',
        '--config.train.num_epochs=2', '--config.train.eval_every=1',
        '--config.model.embed_dim=8', '--config.train.batch_size=256']


def _run(*args):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run([sys.executable, 'main.py', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # Two CLI processes, each compiling the epoch.
def test_train_then_eval(tmp_path, write_items_folder):
  workdir = str(tmp_path / 'run')
  done = _run('--config=configs/default.py', f'--workdir={workdir}', '--config.train.beta=50',
              '--config.data.setting=mtmt', *TINY)
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert {'best_epoch', 'val', 'test', 'test_by_group', 'train_seconds'} <= set(results)
  with open(os.path.join(workdir, 'config.json')) as f:
    saved = json.load(f)
  assert saved['train']['beta'] == 50 and saved['data']['setting'] == 'mtmt'
  assert 'epoch 2/2' in done.stdout  # Progress on stdout, as plain lines.
  assert not re.search(r'^[IWE]\d{4} ', done.stdout + done.stderr, re.M)  # No absl prefix.

  evaluated = _run('--config=configs/default.py', f'--workdir={workdir}', '--mode=eval',
                   '--config.train.beta=50', '--config.data.setting=mtmt', *TINY)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  with open(os.path.join(workdir, 'eval.json')) as f:
    assert json.load(f)['test'] == pytest.approx(results['test'])
  _serve_from_the_command_line(workdir, saved, tmp_path, write_items_folder)


def _serve_from_the_command_line(workdir, saved, tmp_path, write_items_folder):
  """Without --config, eval, recommend and export read the run's own config."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import milk_jax  # pylint: disable=import-outside-toplevel
  from milk_jax.data import dataset as dataset_lib  # pylint: disable=import-outside-toplevel

  assert _run(f'--workdir={workdir}', '--mode=eval').returncode == 0
  conflicting = _run(f'--workdir={workdir}', '--mode=eval', '--config=configs/default.py')
  assert conflicting.returncode == 1 and 'Traceback' not in conflicting.stderr
  assert 'holds a run with a different config' in conflicting.stderr
  config = ml_collections.ConfigDict(saved)
  dataset = dataset_lib.load_dataset(config)
  folder = write_items_folder(str(tmp_path / 'new'), config, dataset, dataset.test_items)
  done = _run(f'--workdir={workdir}', '--mode=recommend', f'--config.recommend.new_items={folder}',
              '--config.recommend.k=5')
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(workdir, 'recommendations.tsv')) as f:
    lines = f.read().splitlines()[1:]
  top = milk_jax.load(workdir).recommend(['0', '1'], 5, items=folder)
  assert [line.split('\t')[2] for line in lines[:10]] == top.items.reshape(-1).tolist()
  done = _run(f'--workdir={workdir}', '--mode=export')
  assert done.returncode == 0, done.stderr[-3000:]
  users = np.load(os.path.join(workdir, 'export', 'users.npy'))
  assert users.shape[0] == dataset.num_users


def test_unknown_config_key_fails_loudly(tmp_path):
  done = _run('--config=configs/default.py', f'--workdir={tmp_path}', '--config.train.betta=5')
  assert done.returncode == 2
  assert 'Traceback' not in done.stderr
  assert done.stderr.startswith("error: 'betta' Did you mean \"beta\"")
  assert not os.listdir(tmp_path)


def _error_line(done, exit_code):
  """The one line of stderr, an `error:` line, after checking the exit code."""
  assert 'Traceback' not in done.stderr, done.stderr[-3000:]
  lines = done.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), done.stderr[-3000:]
  assert done.returncode == exit_code, done.stderr[-3000:]
  return lines[0]


def test_a_missing_config_file_is_one_line_naming_the_configs_there(tmp_path):
  line = _error_line(_run('--config=configs/absent.py', f'--workdir={tmp_path}'), 2)
  assert line.startswith('error: configs/absent.py: no such config file; configs/ has ')
  assert 'ml100k.py' in line and 'base.py' not in line
  assert 'Configuration is not available' not in line and '--help' not in line
  line = _error_line(_run('--config=configs/experiments/overal.py:ml100k', '--mode=experiment',
                          f'--workdir={tmp_path}'), 2)
  assert 'overal.py: no such config file; configs/experiments/ has ablation.py' in line
  assert 'overall.py' in line
  assert not os.listdir(tmp_path)


def test_an_unknown_dataset_after_the_colon_lists_the_datasets(tmp_path):
  line = _error_line(_run('--config=configs/experiments/overall.py:ml100kk', '--mode=experiment',
                          f'--workdir={tmp_path / "x"}'), 2)
  assert "unknown dataset 'ml100kk' after the colon of --config; the datasets are " in line
  assert 'baby_synthetic' in line and 'ml100k,' in line and len(line) < 300


def test_a_folder_without_a_run_is_one_line(tmp_path):
  folder = tmp_path / 'run'
  folder.mkdir()
  line = _error_line(_run(f'--workdir={folder}', '--mode=eval'), 1)
  assert line == (f'error: {folder}/config.json is missing: {folder} is not a trained milk-jax '
                  'run folder (or pass --config=configs/NAME.py)')
  (folder / 'config.json').write_bytes(random.Random(0).randbytes(300))
  line = _error_line(_run(f'--workdir={folder}', '--mode=recommend'), 1)
  assert line.startswith(f'error: {folder}/config.json is damaged (not valid JSON: ')


def test_a_stray_argument_is_one_line_not_the_help(tmp_path):
  line = _error_line(_run('--config=configs/default.py', f'--workdir={tmp_path}', 'stray'), 2)
  assert line == ("error: unexpected argument 'stray': every argument is a flag, --NAME=VALUE "
                  '(--help lists them)')


def test_a_data_path_without_its_format_is_refused(tmp_path):
  line = _error_line(_run('--config=configs/default.py', f'--workdir={tmp_path / "run"}',
                          '--config.data.path=my_data'), 1)
  assert line.startswith("error: config.data.path='my_data': config.data.format='synthetic' ")
  assert 'interactions | mmrec | milk' in line
  assert not os.path.exists(tmp_path / 'run')


def test_help_exits_0_and_fields_lists_a_config():
  done = _run('--help')
  assert done.returncode == 0 and done.stderr == '', done.stderr[-3000:]
  assert '--mode: <train|eval|recommend|export|benchmark|experiment|fields>' in done.stdout
  done = _run('--config=configs/default.py', '--mode=fields', '--config.train.beta=50')
  assert done.returncode == 0 and done.stderr == '', done.stderr[-3000:]
  lines = done.stdout.splitlines()
  assert re.fullmatch(r'train\.beta = 50\.0 +# REx variance weight \(Eq\. 14\)\.',
                      next(line for line in lines if line.startswith('train.beta ')))
  assert any(line.startswith('methods.heater.num_experts = 5 ') for line in lines)


def test_missing_dataset_is_a_clear_error(tmp_path):
  done = _run('--config=configs/ml100k.py', f'--workdir={tmp_path / "run"}',
              f'--config.data.path={tmp_path / "absent"}')
  assert done.returncode != 0
  assert 'absent' in done.stderr
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.slow  # Three CLI training runs: about 20 s.
def test_experiment_mode_runs_the_grid(tmp_path):
  workdir = tmp_path / 'grid'
  done = _run('--config=configs/experiments/overall.py:default', f'--workdir={workdir}',
              '--mode=experiment', '--config.experiment.num_seeds=1',
              "--config.experiment.settings=('ftmt',)", '--config.experiment.methods=()', *TINY)
  assert done.returncode == 0, done.stderr[-3000:]
  assert '[3/3] ftmt/MILK_beta1000/seed_0: trained' in done.stdout
  assert (workdir / 'summary.csv').exists() and (workdir / 'bars.png').exists()
  summary = (workdir / 'summary.md').read_text()
  assert '| MILK_beta1000 | 1 |' in summary
  with open(workdir / 'ftmt' / 'ERM' / 'seed_0' / 'config.json') as f:
    saved = json.load(f)
  assert saved['model']['use_invariance'] is False and 'experiment' not in saved


def test_bad_experiment_is_a_clear_error(tmp_path):
  done = _run('--config=configs/experiments/overall.py:default', f'--workdir={tmp_path / "x"}',
              '--mode=experiment', '--config.experiment.num_seeds=0')
  assert done.returncode != 0
  assert 'num_seeds=0' in done.stderr
  assert not os.path.exists(tmp_path / 'x')


ML100K = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'ml100k-mm')


@pytest.mark.slow  # The real ml100k data through the CLI: about 20 s.
@pytest.mark.skipif(not os.path.isdir(ML100K), reason='../shared/data/ml100k-mm is absent')
def test_ml100k_config_trains_on_the_real_data(tmp_path):
  done = _run('--config=configs/ml100k.py', f'--workdir={tmp_path}', '--config.train.num_epochs=1')
  assert done.returncode == 0, done.stderr[-3000:]
  with open(tmp_path / 'results.json') as f:
    results = json.load(f)
  assert results['val']['num_users'] > 900  # Nearly every ml100k user rates a new item.
  assert set(results['test_by_group']) == {'full', 'missing_1'}
