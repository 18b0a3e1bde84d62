"""The instructor's wing of coursekit: the homework's grader and the student edition.

It imports the learner's modules (``coursekit.homework``, ``coursekit.scorers``, ...); none of them
imports it. The student edition leaves this folder out, and a submission's sandbox sees it empty.
Its modules, each importing only those above it:

- ``coursekit.grading.tasks``    the task registry, and what answers are checked against
- ``coursekit.grading.collect``  what the grader runs in a kernel to collect an answer
- ``coursekit.grading.sandbox``  the bubblewrap sandbox every submission's kernel runs in
- ``coursekit.grading.kernel``   a submission's kernel: cells run one by one with time limits, answers read back
- ``coursekit.grading.reports``  a report as text, one CSV row per submission, reports merged into one CSV
- ``coursekit.grading.batch``    a folder of submissions, N at a time, each in a worker process
- ``coursekit.grading.grade``    one submission, and the command line: ``python -m coursekit.grading.grade``
- ``coursekit.grading.release``  the student edition: ``python -m coursekit.grading.release``
"""
