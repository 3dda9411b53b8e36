"""The four MedMNIST task strings, without importing torch.

``medscope.data`` owns these names (``TASK_*``) but imports torch; the
statistics package is pure numpy/scipy, so it keeps a copy here and
``tests/stats/test_bootstrap.py`` checks the two agree.
"""
TASK_BINARY = "binary-class"
TASK_MULTICLASS = "multi-class"
TASK_MULTILABEL = "multi-label, binary-class"
TASK_ORDINAL = "ordinal-regression"
TASKS = (TASK_BINARY, TASK_MULTICLASS, TASK_MULTILABEL, TASK_ORDINAL)
