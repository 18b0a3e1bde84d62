"""coursekit: the small support package of the course "Attention, hands on".

One module per idea, each importing only those above it (a dataset name walks down
``sources`` -> ``tensordata`` -> ``data`` to batches, and never back up).

- ``coursekit.config``     fast mode, the data and cache folders, seeds and the device
- ``coursekit.files``      the one atomic file writer (caches, checkpoints, results, reports)
- ``coursekit.sources``    the datasets' facts (``DATASETS``) and reading their files
- ``coursekit.tensordata`` each split decoded once into cached tensors; whole-batch augmentation
- ``coursekit.data``       train/validation/test splits and loaders (MNIST, Fashion-MNIST, CIFAR-10/100)
- ``coursekit.runs``       the one table of run settings: how every model is built and trained
- ``coursekit.models``     the CNN, ViT, DeepViT and hybrid models of the course
- ``coursekit.train``      ``fit`` and ``evaluate``
- ``coursekit.bench``      parameter counts, inference time, markdown tables
- ``coursekit.attention``  attention written from the formula
- ``coursekit.sequence``   notebook 02's digit-reversal task: a tiny encoder-decoder transformer
- ``coursekit.maps``       the numbers attention pictures draw: maps, rollout, token maps, attention distance
- ``coursekit.viz``        attention maps, rollout and patch grids as pictures
- ``coursekit.faithfulness`` how far to believe a map: deletion and insertion curves, the randomization check
- ``coursekit.explorer``   the interactive attention explorer (ipywidgets)
- ``coursekit.feedback``   what a scorer returns (``credit``) and how feedback shows a learner's value
- ``coursekit.vitconfig``  is a homework ViT configuration allowed? its rules, and the config task's score
- ``coursekit.scorers``    how the other homework answers are scored (checks only: none computes an answer)
- ``coursekit.homework``   the homework's data, points and the checks its notebook calls
- ``coursekit.reproduce``  the results table of notebook 05: ``python -m coursekit.reproduce``
- ``coursekit.weightfile`` one model's weights in a safetensors file: save, sha256 check, read
- ``coursekit.weights``    the course's trained weights: load, ``python -m coursekit.weights``

The instructor's wing, ``coursekit.grading`` (the homework's grader and the student release), is a
subpackage of its own: it imports these modules, none of them imports it, and neither the student
edition nor a submission's sandbox holds it.
"""

__version__ = "0.1.0"
