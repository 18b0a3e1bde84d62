"""coursekit: the small support package of the course "Attention, hands on".

One module per idea:

- ``coursekit.config``    fast mode, the data folder, seeds and the device
- ``coursekit.data``      datasets and loaders (MNIST, Fashion-MNIST, CIFAR-10/100)
- ``coursekit.tensordata`` datasets decoded once into cached tensors; whole-batch augmentation
- ``coursekit.models``    the CNN, ViT, DeepViT and hybrid models of the course
- ``coursekit.train``     ``fit`` and ``evaluate``
- ``coursekit.recipes``   how notebook 03 trains its CNN and ViT: ``RECIPES``
- ``coursekit.weights``   the course's trained weights: load, save, ``python -m coursekit.weights``
- ``coursekit.bench``     parameter counts, inference time, markdown tables
- ``coursekit.attention`` attention written from the formula
- ``coursekit.viz``       attention maps, rollout and the attention explorer
- ``coursekit.homework``  the homework's data, points and the checks its notebook calls
- ``coursekit.scorers``   how a homework answer is scored (checks only: none computes an answer)
- ``coursekit.reproduce`` the results table of notebook 05: ``python -m coursekit.reproduce``

The instructor's grader (not in the student edition):

- ``coursekit.grade``     one submission: ``python -m coursekit.grade``
- ``coursekit.batch``     a folder of them, N at a time; reports merged into one CSV
- ``coursekit.sandbox``   the bubblewrap sandbox every submission's kernel runs in
- ``coursekit.collect``   what the grader runs in a kernel to collect an answer
- ``coursekit.tasks``     the task registry, and what answers are checked against
- ``coursekit.release``   the student edition: ``python -m coursekit.release``
"""

__version__ = "0.1.0"
