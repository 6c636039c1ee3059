"""The launcher of the ``hydra/launcher=slurm`` preset. Hydra instantiates only plugins it discovered in the
``hydra_plugins`` namespace, and registers each under the module that defines it: hence this subclass here;
everything it does is in ``lossbench.slurm``."""

from lossbench import slurm


class SlurmLauncher(slurm.SlurmLauncher):
    __doc__ = slurm.SlurmLauncher.__doc__
