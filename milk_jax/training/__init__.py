"""Training any method: its state, its steps and epochs, the loop of one run, the backbone.

  state.py     the train state, the method built for the data, the tables on device, the
               streams of the run's root key
  step.py      the update and the step, an epoch as one scanned donated program (EpochProgram)
  loop.py      one run in its locked workdir: resume, epochs, evaluations, checkpoints, the log
  backbone.py  the warm backbone's config and folder, and its vectors read from that folder

`milk_jax/run.py` puts them together into a run (`train_and_evaluate`).
"""
