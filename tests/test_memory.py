"""Host mappings of the library (gmemtest/kvm/memory.py): what they report is the kernel's."""

import pytest

from gmemtest.errors import GmemtestError
from gmemtest.kvm import memory

pytestmark = pytest.mark.harness  # tests of gmemtest itself (the guest: the harness boot)


def test_a_probe_that_cannot_touch_its_byte_is_an_error():
    """Mapping.probe() answers what the kernel did to a touch: a child that could not even
    make the touch (an offset past the mapping) is the harness's error, never "ok"."""
    with memory.anonymous(4096) as m:
        assert m.probe(0) == "ok"
        with pytest.raises(GmemtestError, match="could not touch it"):
            m.probe(4096)
