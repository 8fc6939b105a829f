"""A guest test that goes silent: it stops the init's console heartbeat and blocks. Run only by
tests/test_vm_runner.py, with a short --silence, to check that the runner takes the guest for
hung, has its kernel dump every task, and ends the run clearly."""

import os
import signal
import time
from pathlib import Path


def test_provoke_hang():
    os.kill(int(Path("/run/gmemtest-heartbeat.pid").read_text()), signal.SIGSTOP)
    time.sleep(3600)
