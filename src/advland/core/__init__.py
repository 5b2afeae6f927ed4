"""What every stage imports: the params schema (config), errors and registries, atomic
files and checkpoints (io), norms, noise, attacks and perturbations, models, optimizers,
data parallelism, the stage harness (stage) and the warm interpreter (warm).

Stages depend on this folder as one unit in dvc.yaml, since each imports all of it.
"""
