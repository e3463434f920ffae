import errno

import pytest

from milk_jax import cli
from milk_jax.errors import ConfigError
from milk_jax.errors import Interrupted


def _raise(error):
  def run():
    raise error
  return run


def test_a_user_error_is_one_line_with_its_exit_code(capsys):
  assert cli.run_reporting_errors(_raise(ConfigError('config.train.beta=-1: bad'))) == 1
  assert capsys.readouterr().err == 'error: config.train.beta=-1: bad\n'
  assert cli.run_reporting_errors(_raise(Interrupted('interrupted at epoch 3'))) == 130
  assert capsys.readouterr().err == 'error: interrupted at epoch 3\n'


def test_verbose_adds_the_traceback(capsys):
  cli.run_reporting_errors(_raise(ConfigError('bad')), verbose=True)
  err = capsys.readouterr().err
  assert 'Traceback' in err and err.endswith('error: bad\n')


def test_a_full_disk_wrapped_by_another_error_is_one_line(capsys):
  def run():
    try:
      raise OSError(errno.ENOSPC, 'No space left on device')
    except OSError as disk:
      raise ValueError('RESOURCE_EXHAUSTED: pages of tensorstore spec') from disk

  assert cli.run_reporting_errors(run, folder='runs/x') == 1
  assert capsys.readouterr().err == ('error: No space left on device (while writing to runs/x)\n')


def test_a_bug_keeps_its_traceback():
  with pytest.raises(ZeroDivisionError):
    cli.run_reporting_errors(lambda: 1 / 0)


def test_nested_key_errors_of_ml_collections_read_as_one_line():
  inner = KeyError('\'betta\'\nDid you mean "beta" instead of "betta"?')
  expected = "'betta' Did you mean \"beta\" instead of \"betta\"?"
  assert cli.one_line(AttributeError(inner)) == expected


def test_run_modes_without_config_read_the_run_folder():
  argv = ['main.py', '--workdir=runs/x', '--mode=recommend', '--config.recommend.k=5']
  assert cli.with_run_config(argv, 'configs/run.py') == [
      'main.py', '--config=configs/run.py:runs/x'] + argv[1:]
  given = ['main.py', '--config=configs/default.py', '--workdir', 'runs/x', '--mode', 'eval']
  assert cli.with_run_config(given, 'configs/run.py') == given
  training = ['main.py', '--workdir=runs/x']
  assert cli.with_run_config(training, 'configs/run.py') == training
  eval_spaced = ['main.py', '--workdir', 'runs/y', '--mode', 'eval']
  assert cli.with_run_config(eval_spaced, 'r.py')[1] == '--config=r.py:runs/y'
