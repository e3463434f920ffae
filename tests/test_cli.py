import errno
import logging

from absl import logging as absl_logging
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


def test_a_ctrl_c_stop_is_not_printed_as_an_error(capsys):
  stop = Interrupted('interrupted at epoch 3; run the same command to resume')
  assert cli.run_reporting_errors(_raise(stop)) == 130
  assert capsys.readouterr().err == 'interrupted at epoch 3; run the same command to resume\n'
  assert cli.run_reporting_errors(_raise(KeyboardInterrupt())) == 130
  assert capsys.readouterr().err == 'interrupted\n'


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


def test_a_lost_process_of_a_distributed_run_is_one_line(capsys):
  import jax  # pylint: disable=import-outside-toplevel
  lost = jax.errors.JaxRuntimeError('UNKNOWN: Gloo AllGather failed: [pair.cc:547] Connection '
                                    'closed by peer [127.0.0.1]:4010')
  def run():
    try:
      raise lost
    except RuntimeError as error:
      raise TimeoutError('Timed out while waiting for a barrier.') from error

  assert cli.run_reporting_errors(run, distributed=True) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: a process of the distributed run stopped') and err.endswith(
      'Connection closed by peer [127.0.0.1]:4010\n') and err.count('\n') == 1
  with pytest.raises(type(lost)):  # In a single-process run the same error is a bug.
    cli.run_reporting_errors(_raise(lost))


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
  fields = ['main.py', '--workdir=runs/x', '--mode=fields']
  assert cli.with_run_config(fields, 'r.py')[1] == '--config=r.py:runs/x'


@pytest.fixture
def restored_loggers():
  """configure_output changes process-wide logging: undo it for the tests that follow."""
  names = ('milk_jax', 'jax._src.xla_bridge', 'absl', 'asyncio')
  saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level,
               logging.getLogger(n).propagate) for n in names}
  verbosity = absl_logging.get_verbosity()
  yield
  absl_logging.set_verbosity(verbosity)
  for name, (handlers, level, propagate) in saved.items():
    logger = logging.getLogger(name)
    logger.handlers, logger.propagate = handlers, propagate
    logger.setLevel(level)


def test_progress_on_stdout_warnings_on_stderr_without_absl_prefixes(capsys, restored_loggers):
  del restored_loggers
  cli.configure_output()
  logging.getLogger('milk_jax').info('epoch %d/%d', 1, 2)
  logging.getLogger('milk_jax.experiment').info('[1/3] trained')
  logging.getLogger('milk_jax').warning('falling back to %s', 'latest/4')
  # jax's failed probe of a TPU backend on a CPU machine, which reads like an error.
  logging.getLogger('jax._src.xla_bridge').info("Unable to initialize backend 'tpu'")
  out, err = capsys.readouterr()
  assert [line.split(' ', 1)[1] for line in out.splitlines()] == ['epoch 1/2', '[1/3] trained']
  assert all(len(line.split(' ', 1)[0]) == len('08:54:34') for line in out.splitlines())
  assert err == 'warning: falling back to latest/4\n'
  assert not logging.getLogger('jax._src.xla_bridge').isEnabledFor(logging.INFO)
