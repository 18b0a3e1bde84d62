"""coursekit: the small support package of the course "Attention, hands on".

One module per idea:

- ``coursekit.config``    fast mode, the data folder, seeds and the device
- ``coursekit.data``      datasets and loaders (MNIST, Fashion-MNIST, CIFAR-10/100)
- ``coursekit.tensordata`` datasets decoded once into cached tensors; whole-batch augmentation
- ``coursekit.models``    the CNN, ViT, DeepViT and hybrid models of the course
- ``coursekit.train``     ``fit`` and ``evaluate``
- ``coursekit.bench``     parameter counts, inference time, markdown tables
- ``coursekit.attention`` attention written from the formula
- ``coursekit.viz``       attention maps, rollout and the attention explorer
- ``coursekit.homework``  the homework's tasks and the checks that score them
- ``coursekit.grade``     the homework grader: ``python -m coursekit.grade``
- ``coursekit.reproduce`` the results table of notebook 05: ``python -m coursekit.reproduce``
"""

__version__ = "0.1.0"
