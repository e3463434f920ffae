from configs import base
from configs.experiments import overall
from milk_jax import config_fields

SOURCE = '''
def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds everything.
  data = config.data = ml_collections.ConfigDict()
  data.format = 'synthetic'  # synthetic | mmrec.
  syn = data.synthetic = ml_collections.ConfigDict()
  syn.num_users = 600  # Users.
  # Where the data lives;
  # None = nowhere.
  data.path = None
  data.plain = 1
  return config
'''


def test_comments_follow_section_names_and_comment_lines_above():
  assert config_fields.field_comments(SOURCE) == {
      'seed': 'Seeds everything.', 'data.format': 'synthetic | mmrec.',
      'data.synthetic.num_users': 'Users.', 'data.path': 'Where the data lives; None = nowhere.'}


def test_every_field_of_the_configs_has_its_comment():
  comments = config_fields.read_comments()
  for config in (base.get_config(), overall.get_config('default')):
    lines = config_fields.describe(config, comments).splitlines()
    assert lines and all('  # ' in line for line in lines), [l for l in lines if '#' not in l]
  line = next(l for l in lines if l.startswith('train.beta '))
  assert line.split('  # ')[1] == 'REx variance weight (Eq. 14).'
