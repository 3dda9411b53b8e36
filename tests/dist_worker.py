"""train.py for torchrun with a fault injected: what tests/test_distributed.py starts.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/dist_worker.py <train.py args>

``MEDSCOPE_TEST_FAULT=KIND:RANK:EPOCH`` acts on process ``RANK`` as epoch
``EPOCH`` starts (the run's checkpoint of epoch ``EPOCH - 1`` is on disk):

- ``exit``: the process dies at once (``os._exit(1)``), like a crashed GPU.
- ``ctrl-c``: SIGINT to torchrun, which is what Ctrl-C in its terminal does;
  torchrun forwards it to every worker.

The fault lives here, not in the library, so train.py carries no test hooks.
"""
import os
import re
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train  # noqa: E402
from medscope.app import cli  # noqa: E402
from medscope.train import experiment


def _inject(kind: str, rank: int, epoch: int) -> None:
    real = experiment.train_one_epoch

    def train_one_epoch(*args, **kwargs):
        current = int(re.match(r"epoch (\d+)/", kwargs["description"]).group(1))
        if current == epoch and int(os.environ["RANK"]) == rank:
            if kind == "exit":
                os._exit(1)
            os.kill(os.getppid(), signal.SIGINT)  # the parent of a worker is torchrun's agent
            time.sleep(60)  # the forwarded SIGINT ends this sleep as a KeyboardInterrupt
        return real(*args, **kwargs)

    experiment.train_one_epoch = train_one_epoch


if __name__ == "__main__":
    sys.argv[0] = train.__file__  # it is train.py, as far as the run's recorded command goes
    fault = os.environ.get("MEDSCOPE_TEST_FAULT")
    if fault:
        kind, rank, epoch = fault.split(":")
        _inject(kind, int(rank), int(epoch))
    sys.exit(cli.run(train.main))
