import json
import os
import socket
import subprocess

import pytest

from milk_jax import runfolder
from milk_jax.errors import ConfigError
from milk_jax.errors import RunFolderError


def test_a_second_holder_of_the_lock_is_refused_with_the_pid(tmp_path):
  with runfolder.lock(str(tmp_path)):
    with pytest.raises(RunFolderError, match=rf'{tmp_path} is in use by another process '
                       rf'\(pid {os.getpid()} on '):
      with runfolder.lock(str(tmp_path)):
        pass
  with runfolder.lock(str(tmp_path)):  # Released when the first holder is done.
    pass


def test_atomic_json_write_leaves_no_temporary_file(tmp_path):
  path = str(tmp_path / 'results.json')
  runfolder.write_json(path, {'a': 1})
  runfolder.write_json(path, {'a': 2})
  assert json.loads((tmp_path / 'results.json').read_text()) == {'a': 2}
  assert sorted(os.listdir(tmp_path)) == ['results.json']


def test_write_file_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path):
  path = tmp_path / 'vectors.bin'
  path.write_bytes(b'old')
  runfolder.write_file(str(path), lambda f: f.write(b'new contents'))
  assert path.read_bytes() == b'new contents'
  assert os.listdir(tmp_path) == ['vectors.bin']


def test_write_file_keeps_the_old_file_when_the_writer_fails(tmp_path):
  path = tmp_path / 'vectors.bin'
  path.write_bytes(b'old')

  def failing(f):
    f.write(b'half')
    raise OSError('disk full')

  with pytest.raises(OSError, match='disk full'):
    runfolder.write_file(str(path), failing)
  assert path.read_bytes() == b'old'
  assert os.listdir(tmp_path) == ['vectors.bin']


def test_invalid_json_names_the_file(tmp_path):
  (tmp_path / 'config.json').write_text('{"train": {"beta": 1')
  with pytest.raises(RunFolderError, match=r'config.json is damaged \(not valid JSON.*'
                     "the run's config"):
    runfolder.saved_config(str(tmp_path))


def test_log_drops_a_half_written_last_line_with_a_warning(tmp_path, caplog):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"epoch": 1, "kind": "train"}\n{"epoch": 2, "ki')
  assert runfolder.read_log(str(path)) == [{'epoch': 1, 'kind': 'train'}]
  assert 'half-written last line 2' in caplog.text


def test_log_damaged_in_the_middle_is_an_error(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"epoch": 1}\nxx\n{"epoch": 2}\n')
  with pytest.raises(RunFolderError, match='metrics.jsonl: line 2 is not valid JSON'):
    runfolder.read_log(str(path))


def test_append_and_rewrite_keep_whole_lines(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  for epoch in range(3):
    runfolder.append_log(path, {'epoch': epoch})
  runfolder.rewrite_log(path, [{'epoch': 0}], epoch=0)
  assert runfolder.read_log(path) == [{'epoch': 0}]
  assert open(path).read() == '{"epoch": 0}\n'


def test_config_saved_before_added_fields_still_matches(make_config):
  config = make_config()
  saved = json.loads(config.to_json())
  for field in ('sampler', 'feature_dtype', 'data_parallel', 'shard_user_table',
                'divergence_factor', 'divergence_epochs'):
    del saved['train'][field]
  saved['benchmark']['num_steps'] = 7  # The benchmark section never blocks a resume.
  saved['train']['checkpoint_every'] = 1  # How often to save never changes the results.
  assert runfolder.changed_fields(saved, config) == []
  device = make_config(train={'sampler': 'device'})
  assert runfolder.changed_fields(saved, device) == ['train.sampler']


def test_config_saved_before_the_data_id_fields_still_matches(make_config):
  config = make_config()
  saved = json.loads(config.to_json())
  for field in ('ids', 'item_ids_file', 'min_rating', 'split'):
    del saved['data'][field]
  assert runfolder.changed_fields(saved, config) == []
  config.data.split = 'time'
  assert runfolder.changed_fields(saved, config) == ['data.split']


def test_config_saved_before_dgmrec_s_protocol_and_the_coldrec_options_still_matches(make_config):
  for method in ('milk', 'gar', 'mtpr'):
    saved = json.loads(make_config(method).to_json())
    for section, field in (('data', 'unpopular_fraction'), ('data', 'stratified_missing_rate')):
      del saved[section][field]
    for owner, field in (('gar', 'variant'), ('gar', 'coldrec_reg'), ('mtpr', 'init'),
                         ('mtpr', 'new_item_representation')):
      del saved['methods'][owner][field]
    assert runfolder.changed_fields(saved, make_config(method)) == [], method
  assert runfolder.changed_fields(saved, make_config('mtpr', init='xavier')) == [
      'methods.mtpr.init']


def test_every_added_field_defaults_to_what_older_versions_ran_with(make_config):
  flat = runfolder._flatten(json.loads(make_config().to_json()))
  for key, value in runfolder.ADDED_FIELDS.items():
    assert flat[key] == value, key


@pytest.mark.parametrize('saved, trained, eval_every, new, message', [
    (10, 10, 5, 20, None),  # Evaluated on schedule at its end: continues exactly.
    (10, 4, 5, 20, None),  # Stopped early (or interrupted) before its end.
    (10, 10, 3, 20, 'off the every-3-epochs schedule'),  # Its extra last evaluation.
    (20, 20, 5, 10, 'has trained 20 epochs, more than config.train.num_epochs=10'),
    (20, 8, 5, 10, None),  # A shorter cap the run never passed.
])
def test_check_continuation(tmp_path, saved, trained, eval_every, new, message, make_config):
  config = make_config(train={'num_epochs': new, 'eval_every': eval_every})
  if message is None:
    runfolder.check_continuation(str(tmp_path), saved, trained, config)
  else:
    with pytest.raises(ConfigError, match=message):
      runfolder.check_continuation(str(tmp_path), saved, trained, config)


def test_a_run_compares_only_the_fields_its_method_reads(make_config):
  milk_run = json.loads(make_config().to_json())
  changed = make_config()
  changed.methods.bprmf.reg_weight = 0.5  # Another method's section.
  changed.backbone.num_epochs = 3  # MILK reads no backbone.
  assert runfolder.changed_fields(milk_run, changed) == []
  changed.method = 'bprmf'
  assert 'method' in runfolder.changed_fields(milk_run, changed)

  bprmf_run = json.loads(changed.to_json())
  other = make_config()
  other.method = 'bprmf'
  other.backbone.num_epochs = 3
  other.methods.bprmf.reg_weight = 0.5
  other.train.beta = 123.0  # MILK's field: BPR-MF never reads it.
  assert runfolder.changed_fields(bprmf_run, other) == []
  other.methods.bprmf.reg_weight = 0.25
  assert runfolder.changed_fields(bprmf_run, other) == ['methods.bprmf.reg_weight']


def test_a_config_saved_before_methods_existed_is_a_milk_run(make_config):
  saved = json.loads(make_config().to_json())
  for key in ('method', 'methods', 'backbone'):
    del saved[key]
  assert runfolder.changed_fields(saved, make_config()) == []


def test_two_writers_of_one_file_do_not_collide_and_the_last_one_wins(tmp_path):
  """A second process writes the same file while the first is half-way (two recommends)."""
  path = str(tmp_path / 'top.tsv')

  def first(f):
    f.write(b'first, ')
    runfolder.write_file(path, lambda g: g.write(b'second, whole'))  # Renamed meanwhile.
    f.write(b'whole')

  runfolder.write_file(path, first)
  assert open(path, 'rb').read() == b'first, whole'
  assert os.listdir(tmp_path) == ['top.tsv']


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path):
  path = tmp_path / 'top.tsv'
  path.write_bytes(b'old')

  def interrupted(f):
    f.write(b'half')
    raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    runfolder.write_file(str(path), interrupted)
  assert os.listdir(tmp_path) == ['top.tsv'] and path.read_bytes() == b'old'


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
  dead = _dead_pid()
  host = socket.gethostname()
  stale = tmp_path / f'top.tsv.{host}-{dead}-0123abcd.tmp'
  alive = tmp_path / f'top.tsv.{host}-{os.getppid()}-0123abcd.tmp'  # Still writing.
  other = tmp_path / 'other.tsv.x-1-0123abcd.tmp'
  for path in (stale, alive, other):
    path.write_bytes(b'partial')
  runfolder.write_text(str(tmp_path / 'top.tsv'), 'new\n')
  assert sorted(os.listdir(tmp_path)) == sorted(['top.tsv', alive.name, other.name])


def _dead_pid():
  process = subprocess.Popen(['true'])
  process.wait()
  return process.pid  # Reaped: no process has this pid now (until the kernel reuses it).


def test_a_fifo_is_refused_before_it_is_opened(tmp_path, fails_instead_of_hanging):
  path = tmp_path / runfolder.CONFIG_FILE
  os.mkfifo(path)
  with fails_instead_of_hanging():  # A regression blocks in open().
    with pytest.raises(RunFolderError, match=r'config\.json: a FIFO \(named pipe\), not a '
                       'regular file'):
      runfolder.saved_config(str(tmp_path))
