"""A config's fields, values and one-line comments: `python main.py --config=... --mode=fields`.

The comments are read from the source of the files that define the fields
(configs/base.py, configs/methods/<name>.py, configs/experiments/base.py),
so the listing says what the code says.
"""

import ast
import importlib.util
import io
import os
import tokenize
from typing import Any

import ml_collections


def _comments_by_line(source: str) -> dict[int, str]:
  comments = {}
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      comments[token.start[0]] = token.string.lstrip('#').strip()
  return comments


def _dotted(node: ast.expr, sections: dict[str, str]) -> str | None:
  """'data.format' for `data.format` when `data` is bound to the section 'data'."""
  if isinstance(node, ast.Name):
    return sections.get(node.id)
  if isinstance(node, ast.Attribute):
    parent = _dotted(node.value, sections)
    return None if parent is None else (f'{parent}.{node.attr}' if parent else node.attr)
  return None


def field_comments(source: str) -> dict[str, str]:
  """{dotted field: comment} for each `x.field = value  # comment` of the functions in `source`.

  `x` is `config` or a name bound to one of its sections (`data = config.data = ...`).
  A field without a comment at the end of its line takes the comment lines right above it.
  """
  comments = _comments_by_line(source)
  lines = source.splitlines()
  found = {}
  for function in ast.walk(ast.parse(source)):
    if not isinstance(function, ast.FunctionDef):
      continue
    sections = {'config': ''}
    for statement in function.body:
      if not isinstance(statement, ast.Assign):
        continue
      paths = [_dotted(t, sections) for t in statement.targets if isinstance(t, ast.Attribute)]
      for target in statement.targets:
        if isinstance(target, ast.Name) and paths and paths[0] is not None:
          sections[target.id] = paths[0]
      comment = comments.get(statement.end_lineno)
      above = statement.lineno - 1
      while comment is None and above >= 1 and lines[above - 1].strip().startswith('#'):
        above -= 1
      if comment is None and above < statement.lineno - 1:
        comment = ' '.join(comments[line] for line in range(above + 1, statement.lineno))
      for path in paths:
        if path and comment:
          found[path] = comment
  return found


def _configs_dir() -> str:
  """The folder of the `configs` package (the repository's configs/), found without importing it."""
  spec = importlib.util.find_spec('configs')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError('no configs/ package on the import path (run from the repository)')
  return spec.submodule_search_locations[0]


def read_comments(configs_dir: str | None = None) -> dict[str, str]:
  """{dotted field: comment} of every field that configs/ defines (default: the package's)."""
  configs_dir = configs_dir or _configs_dir()
  sources = [('', os.path.join(configs_dir, 'base.py')),
             ('', os.path.join(configs_dir, 'experiments', 'base.py'))]
  methods_dir = os.path.join(configs_dir, 'methods')
  for name in sorted(os.listdir(methods_dir)):
    if name.endswith('.py') and name != '__init__.py':
      sources.append((f'methods.{name[:-3]}.', os.path.join(methods_dir, name)))
  found = {}
  for prefix, path in sources:
    with open(path, encoding='utf-8') as f:
      found.update({prefix + field: text for field, text in field_comments(f.read()).items()})
  return found


def _leaves(tree: Any, prefix: str = '') -> list[tuple[str, Any]]:
  if isinstance(tree, dict) and tree:
    return [leaf for key, value in tree.items() for leaf in _leaves(value, f'{prefix}{key}.')]
  return [(prefix[:-1], tree)]


def describe(config: ml_collections.ConfigDict, comments: dict[str, str]) -> str:
  """One line per field: `dotted = value  # comment`, in the config's order."""
  rows = [(f'{field} = {value!r}', comments.get(field)) for field, value in
          _leaves(config.to_dict())]
  width = min(max(len(left) for left, _ in rows), 56)
  return '\n'.join(f'{left:<{width}}  # {comment}' if comment else left for left, comment in rows)


def print_fields(config: ml_collections.ConfigDict, workdir: str | None = None) -> None:
  """--mode=fields: prints `describe(config)` with the comments of configs/."""
  del workdir  # Lists the config only; a mode's entry takes (config, workdir).
  print(describe(config, read_comments()))
