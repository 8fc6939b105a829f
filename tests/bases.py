"""The Debian base the host tests build on: the one the main job (`make vm-test`) took on this
machine, i.e. the newest base kpatches/ supports whose source is in the cache (else the newest
supported), so that their builds share its objects."""

from gmemtest.vmtier import debian, patchset


def main_base() -> str:
    supported = patchset.bases()
    fetched = [b for b in debian.fetched_bases() if b in supported]
    return (fetched or supported)[-1]


BASE = main_base()
