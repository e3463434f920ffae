"""The training loop of one run in its workdir: resume, epochs, evaluations, checkpoints, the log.

`Training` drives an `EpochProgram` (training/step.py) of any method; it knows
nothing of what the method computes beyond its metrics and its vectors. Its
counters are a `LoopState`, saved as JSON with every latest checkpoint.
"""

import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from milk_jax import checkpoint
from milk_jax import evaluate
from milk_jax import faults
from milk_jax import interrupt
from milk_jax import methods
from milk_jax import runfolder
from milk_jax.data import sampling
from milk_jax.errors import DivergenceError
from milk_jax.errors import Interrupted
from milk_jax.errors import RunFolderError

log = logging.getLogger('milk_jax')


@dataclasses.dataclass
class LoopState:
  """The loop's counters, saved as JSON with every latest checkpoint (its `meta`).

  A fresh run starts from the defaults; a resumed one from its checkpoint's,
  so that its totals, its best and its divergence count go on where it stopped.
  The JSON keys are the field names, as run folders have always saved them.
  """
  epoch: int = 0  # The last epoch trained.
  best_metric: float | None = None  # The best validation value of select_metric so far.
  best_epoch: int = 0
  evals_since_best: int = 0  # Evaluations without improvement: patience counts them.
  best_val: dict[str, Any] | None = None  # The best epoch's validation metrics.
  train_seconds: float = 0.0
  compile_seconds: float = 0.0
  first_loss: float | None = None  # The first epoch's loss, which divergence compares with.
  epochs_above: int = 0  # Epochs in a row far above first_loss.

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, saved: dict[str, Any]) -> 'LoopState':
    """The counters of a checkpoint's meta (its digest already removed)."""
    return cls(**{field.name: saved[field.name] for field in dataclasses.fields(cls)})


# BPR-MF trained alone (Method.select_last): its evaluation is kept as the warm-only reference.
WARM_ONLY = ('no vector for a new item: all score 0, so this ranking is the same at every '
             'epoch; the last epoch is kept')


def format_metrics(metrics: dict[str, float], keys: tuple[str, ...]) -> str:
  return ' '.join(f'{k} {metrics[k]:.4f}' for k in keys if k in metrics)


def shown_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The metrics a log line shows: Recall and NDCG at every cut-off."""
  return tuple(f'{m}@{k}' for m in ('recall', 'ndcg') for k in config.eval.ks)


def format_duration(seconds: float) -> str:
  """'42s', '1m20s', '2h05m': a time left, to the second below an hour."""
  seconds = max(0, round(seconds))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def check_divergence(config: ml_collections.ConfigDict, loop: LoopState, epoch: int,
                     metrics: dict[str, float], best_path: str) -> None:
  """DivergenceError on a non-finite loss, or a loss far above the first epoch's for long.

  Updates loop.first_loss and loop.epochs_above (saved with checkpoints,
  so a resumed run counts on where it stopped).
  """
  train_config = config.train
  knobs = f'config.train.learning_rate (now {train_config.learning_rate:g})'
  for field in methods.info(config.method).divergence_fields:
    section, name = field.split('.')
    knobs += f' or config.{field} (now {config[section][name]:g})'
  advice = (f"lower {knobs}; the best checkpoint (epoch {loop.best_epoch}) is kept in "
            f'{best_path}')
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  if bad:
    raise DivergenceError(f'training diverged at epoch {epoch}: the loss is not finite '
                          f'({", ".join(f"{k} {v}" for k, v in bad.items())}); {advice}')
  loss, first = metrics['loss'], loop.first_loss
  if first is None:
    loop.first_loss = loss
    return
  factor = train_config.divergence_factor
  above = factor > 0 and loss > factor * abs(first)
  loop.epochs_above = loop.epochs_above + 1 if above else 0
  if loop.epochs_above >= train_config.divergence_epochs:
    raise DivergenceError(
        f'training diverged at epoch {epoch}: the loss ({loss:.4g}) has stayed above '
        f'{factor:g} x the first epoch\'s ({first:.4g}) for {loop.epochs_above} epochs '
        f'(config.train.divergence_factor, divergence_epochs); {advice}')


class Training:
  """One run in its locked workdir: resume, epochs, evaluations, checkpoints, the log.

  A latest checkpoint holds the state, the best parameters so far and the
  loop counters, so it alone is enough to resume; the best checkpoint is
  the copy that `--mode=eval` reads, re-saved from the latest one whenever
  the two disagree (a kill between their saves).
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               dataset, program, held_out: bool = True):
    self.config = config
    self.held_out = held_out  # False: a warm backbone, which ranks nothing (train_and_evaluate).
    self.workdir = workdir
    self.dataset = dataset
    self.program = program
    self.state = program.fresh_state()
    self.best_params = None  # The best epoch's variables (params and model state).
    self.loop = LoopState()
    self.history: list[dict[str, Any]] = []
    self.log_path = os.path.join(workdir, 'metrics.jsonl')
    self.checkpoints = checkpoint.Checkpoints(workdir)
    self.select = config.train.select_metric
    self.ks_shown = shown_keys(config)
    # Wall seconds of each epoch trained by this process (evaluation and saves included,
    # compilation not): their mean estimates the time left.
    self.epoch_walls: list[float] = []

  # ------------------------------------------------------------ checkpoints


  def save_latest(self, epoch: int) -> None:
    arrays = {'state': checkpoint.state_tree(self.state), 'best_params': self.best_params}
    self.checkpoints.save(checkpoint.LATEST, epoch, arrays, self.loop.to_json())

  def _save_latest_once(self) -> None:
    """Save the latest state unless the newest latest checkpoint already holds its epoch."""
    saved = self.checkpoints.epochs(checkpoint.LATEST)
    if not saved or saved[0] != self.loop.epoch:
      self.save_latest(self.loop.epoch)

  def save_best(self) -> None:
    self.checkpoints.save(checkpoint.BEST, self.loop.best_epoch, {'params': self.best_params},
                          {'epoch': self.loop.best_epoch, 'val': self.loop.best_val})

  def _repair_best(self) -> None:
    """Re-save the best checkpoint when it is missing, damaged or of another epoch."""
    best_epoch = self.loop.best_epoch
    saved = self.checkpoints.epochs(checkpoint.BEST)
    problem = None
    if not saved:
      problem = 'is missing'
    elif saved[0] != best_epoch:
      problem = f'holds epoch {saved[0]}'
    else:
      try:
        self.checkpoints.restore(checkpoint.BEST, best_epoch, {'params': self.best_params})
      except checkpoint.DamagedCheckpoint as error:
        problem = f'is damaged ({error})'
    if problem is not None:
      log.warning("%s %s, but the run's best is epoch %d: re-saving it from the latest "
                  'checkpoint', self.checkpoints.path(checkpoint.BEST), problem, best_epoch)
      self.checkpoints.discard(checkpoint.BEST)
      self.save_best()

  def resume(self, saved_num_epochs: int | None) -> int:
    """Restore the newest intact latest checkpoint, if any; returns its epoch (0: fresh)."""
    restored = None
    if self.config.train.resume:
      like, older = checkpoint.latest_like(self.state)  # Older run folders' layouts too.
      restored = self.checkpoints.restore_newest(checkpoint.LATEST, like, older)
    if restored is None:
      # Starting over: a best checkpoint or log left by an attempt that died before its
      # first latest checkpoint is stale.
      self.checkpoints.discard(checkpoint.BEST)
      self._truncate_log(-1)  # Nothing of it is kept, not even its epoch-0 evaluation.
      return 0
    epoch, arrays, meta = restored
    if meta.get('epoch') != epoch:
      raise RunFolderError(f'{self.checkpoints.path(checkpoint.LATEST, epoch)} records epoch '
                           f"{meta.get('epoch')}: the checkpoint folder was renamed or mixed up")
    if saved_num_epochs is not None:
      runfolder.check_continuation(self.workdir, saved_num_epochs, epoch, self.config)
    self.state = self.program.place(checkpoint.state_from_tree(arrays['state'], self.state))
    self.best_params = arrays['best_params']
    self.loop = loop = LoopState.from_json(meta)
    self._repair_best()
    self._truncate_log(epoch)
    best = ('' if loop.best_metric is None else  # None: a warm backbone's, never ranked.
            f" (best {self.select} {loop.best_metric:.4f} at epoch {loop.best_epoch})")
    log.info('resumed from %s at epoch %d%s', self.workdir, epoch, best)
    return epoch

  # ---------------------------------------------------------------- the log

  def _truncate_log(self, epoch: int) -> None:
    """Keep the log records up to `epoch` (-1: none); later ones are an interrupted tail."""
    records = runfolder.read_log(self.log_path) if runfolder.is_primary_process() else []
    self.history = [r for r in records if r.get('epoch', math.inf) <= epoch]
    if runfolder.is_primary_process() and os.path.exists(self.log_path) and (
        len(self.history) != len(records) or not _ends_with_newline(self.log_path)):
      runfolder.rewrite_log(self.log_path, self.history, epoch)

  def log_record(self, record: dict[str, Any]) -> None:
    self.history.append(record)
    if faults.armed('log_append', record['epoch']):
      self.checkpoints.wait()  # The crash test expects the checkpoints before it on disk.
    if runfolder.is_primary_process():
      runfolder.append_log(self.log_path, record)

  # ---------------------------------------------------------------- the loop

  def validate(self, epoch: int) -> bool:
    """Evaluate, track the best, save it; True when patience is exhausted."""
    loop = self.loop
    if not self.held_out:  # Nothing to rank: every evaluation point keeps its epoch, silently.
      loop.best_epoch, loop.evals_since_best = epoch, 0
      self.best_params = jax.tree.map(jnp.copy, self.state.variables)
      self.save_best()
      return False
    val = self.program.evaluate(self.state.variables, 'val')
    # A warm backbone cannot score new items: its best epoch is its last.
    improved = (loop.best_metric is None or val[self.select] > loop.best_metric
                or self.program.method.select_last)
    if improved:
      loop.best_metric, loop.best_epoch, loop.evals_since_best = val[self.select], epoch, 0
      loop.best_val = val
      self.best_params = jax.tree.map(jnp.copy, self.state.variables)  # The next epoch donates.
      self.save_best()
    else:
      loop.evals_since_best += 1
    self.log_record({'epoch': epoch, 'kind': 'eval', 'val': val})
    mark = f' ({WARM_ONLY})' if self.program.method.select_last else (
        ' (new best)' if improved else '')
    log.info('eval epoch %d: val %s | best %s %.4f at epoch %d%s', epoch,
             format_metrics(val, self.ks_shown), self.select, loop.best_metric,
             loop.best_epoch, mark)
    return loop.evals_since_best >= self.config.train.patience

  def _crash_point(self, name: str, epoch: int) -> None:
    if faults.armed(name, epoch):
      self.checkpoints.wait()  # What was saved before the crash point is on disk.
      faults.crash_point(name, epoch)

  def train_epoch(self, epoch: int) -> dict[str, float]:
    tic = time.perf_counter()
    self.state, metrics = self.program.run(self.state, epoch)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    compile_seconds = self.program.last_compile_seconds
    seconds = time.perf_counter() - tic - compile_seconds
    if compile_seconds:
      log.info('compiled the epoch program in %.1fs', compile_seconds)
    # Saved with the checkpoint: a resumed run keeps its totals.
    self.loop.train_seconds += seconds
    self.loop.compile_seconds += compile_seconds
    check_divergence(self.config, self.loop, epoch, metrics,
                     self.checkpoints.path(checkpoint.BEST))
    self.loop.epoch = epoch
    self.log_record({'epoch': epoch, 'kind': 'train', **metrics, 'seconds': seconds})
    steps = sampling.steps_per_epoch(len(self.dataset.train_pairs), self.config.train.batch_size)
    parts = ' '.join(f'{k} {metrics[k]:.4g}' for k in self.program.method.log_keys
                     if k in metrics)
    log.info('epoch %d/%d loss %.4f%s %.2fs, %.0f triples/s%s', epoch,
             self.config.train.num_epochs, metrics['loss'], f' ({parts})' if parts else '',
             seconds, steps * self.config.train.batch_size / max(seconds, 1e-9),
             self._eta(epoch, seconds))
    return metrics

  def _eta(self, epoch: int, seconds: float) -> str:
    """', eta 1m20s': the epochs left times the mean epoch so far (an early stop ends sooner)."""
    left = self.config.train.num_epochs - epoch
    if left <= 0:
      return ''
    walls = self.epoch_walls or [seconds]  # This process's first epoch: its training alone.
    return f', eta {format_duration(left * sum(walls) / len(walls))}'

  def run(self, start_epoch: int,
          epoch_callback: Callable[[int, dict[str, float]], None] | None) -> bool:
    """Train from `start_epoch` to the end or early stop; True when stopped early."""
    train_config = self.config.train
    stopped = self.loop.evals_since_best >= train_config.patience
    if self.best_params is None:  # A fresh run: the untrained model's evaluation comes first.
      stopped = self.validate(0)
    for epoch in range(start_epoch + 1, train_config.num_epochs + 1):
      if stopped:
        break
      if _stop_requested(epoch):
        self._save_latest_once()
        self.checkpoints.wait()
        raise Interrupted(f"interrupted at epoch {self.loop.epoch}; run the same command "
                          'to resume')
      tic = time.perf_counter()
      metrics = self.train_epoch(epoch)
      evaluated = epoch % train_config.eval_every == 0 or epoch == train_config.num_epochs
      if evaluated:
        stopped = self.validate(epoch)
      self._crash_point('between_saves', epoch)
      every = train_config.checkpoint_every
      if stopped or epoch == train_config.num_epochs or (epoch % every == 0 if every
                                                         else evaluated):
        self.save_latest(epoch)
      self._crash_point('after_latest', epoch)
      self.epoch_walls.append(time.perf_counter() - tic - self.program.last_compile_seconds)
      if epoch_callback is not None:
        self.checkpoints.wait()
        epoch_callback(epoch, metrics)
    self._save_latest_once()
    if stopped:
      log.info('stopped early at epoch %d/%d: no improvement in %d evaluations since epoch %d '
               '(config.train.patience)', self.loop.epoch, train_config.num_epochs,
               self.loop.evals_since_best, self.loop.best_epoch)
    return stopped

  def results(self, stopped_early: bool, best_vectors: tuple[Any, Any],
              calibration=None) -> dict[str, Any]:
    """The results contract, with test metrics of the best parameters' (users, items) vectors.

    With a `calibration` (calibration.Calibration), the test metrics rank its
    calibrated scores, the plain ones follow as test*_uncalibrated, and its
    fitted values are reported. A warm backbone's (held_out False) has no
    metrics: its kept epoch, its training loss and times.
    """
    loop = self.loop
    if not self.held_out:
      train = next((r for r in reversed(self.history) if r['kind'] == 'train'), {})
      log.info('kept epoch %d: a warm backbone has no vector for a new item, so nothing is '
               'ranked (DropoutNet, Heater, GAR and GoRec read its vectors)', loop.best_epoch)
      return {'best_epoch': int(loop.best_epoch), 'epochs_run': int(loop.epoch),
              'stopped_early': bool(stopped_early),
              'train': {k: v for k, v in train.items() if k not in ('epoch', 'kind')},
              'train_seconds': loop.train_seconds, 'compile_seconds': loop.compile_seconds}
    item_maps = None if calibration is None else calibration.item_maps(self.dataset.availability)
    held_out = evaluate.held_out_metrics(self.config.eval, *best_vectors, self.dataset, item_maps)
    test = held_out['test']
    log.info('test at best epoch %d: %s%s', loop.best_epoch,
             format_metrics(test, self.ks_shown),
             f' ({WARM_ONLY})' if self.program.method.select_last else
             ' (calibrated by modality pattern)' if calibration is not None else '')
    if calibration is not None:
      log.info('test uncalibrated: %s', format_metrics(held_out['test_uncalibrated'],
                                                       self.ks_shown))
    return {
        'best_epoch': int(loop.best_epoch),
        'epochs_run': int(loop.epoch),
        'stopped_early': bool(stopped_early),
        'val': loop.best_val,
        **({} if calibration is None else {'val_calibrated': evaluate.evaluate_split(
            self.config.eval, *best_vectors, self.dataset, 'val', item_maps=item_maps)}),
        **held_out,
        **({} if calibration is None else {'calibration': calibration.report()}),
        'missing': self.dataset.missing_report(),
        'train_seconds': loop.train_seconds,
        'compile_seconds': loop.compile_seconds,
        'history': [r for r in self.history if r['kind'] == 'eval'],
    }


def _stop_requested(epoch: int) -> bool:
  """Ctrl-C before `epoch`; in a multi-process run, in any process, or a preemption notice
  (SIGTERM, as SLURM sends before a job's end): every process stops at the same epoch."""
  if jax.process_count() == 1:
    return interrupt.requested()
  asked = multihost_utils.process_allgather(np.asarray(interrupt.requested()))
  return bool(np.any(asked)) or multihost_utils.reached_preemption_sync_point(epoch)


def _ends_with_newline(path: str) -> bool:
  with open(path, 'rb') as f:
    f.seek(0, os.SEEK_END)
    if f.tell() == 0:
      return True
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b'\n'
