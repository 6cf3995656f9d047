"""Data: sources that build in-memory sample sets, splits, datasets and train-only input noise.

Importing the package registers every built-in source.
"""

from distmtl.data import cifar100, combined, digits, hdf5_store, oxford_pet, synthetic, torchvision_sets  # noqa: F401
