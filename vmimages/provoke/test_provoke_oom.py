"""A guest test that runs the guest out of memory (each chunk written, so it is really
allocated). Run only by tests/test_vm_runner.py, with a small guest, to check that an OOM kill
fails the run clearly."""


def test_provoke_oom():
    chunks = []
    while True:
        chunks.append(b"\x01" * (32 << 20))
