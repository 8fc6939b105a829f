"""The suite's fixtures and its ``needs`` vocabulary come from gmemtest's pytest plugin
(gmemtest/testing/plugin.py, registered as a pytest11 entry point), so that the same rules hold
on the host and in the guest."""
