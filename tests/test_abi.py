"""`gmemtest abi-check` against real 7.2 uapi headers (Debian's linux-libc-dev 7.2.x)."""

import os
import re
import shutil
from pathlib import Path

import pytest

from gmemtest import abi
from gmemtest.cli import main
from gmemtest.errors import GmemtestError
from gmemtest.kvm import revision as rev
from gmemtest.testing import ENV_HEADERS
from gmemtest.vmtier import debian

pytestmark = pytest.mark.harness  # tests of gmemtest itself (the guest: the harness boot)


@pytest.fixture(scope="session")
def headers_72() -> Path:
    """The uapi headers of the kernel under test when the run names them (in the guest: the
    build's), else Debian's linux-libc-dev 7.2.x."""
    named = os.environ.get(ENV_HEADERS)
    if named and (Path(named) / "linux/kvm.h").is_file():
        return Path(named)
    return debian.linux_libc_dev("7.2")


def copy_headers(headers: Path, tmp_path: Path) -> Path:
    """A private copy of an include dir to alter (symlinks, as in linux-libc-dev, followed)."""
    root = tmp_path / "include"
    shutil.copytree(headers, root)
    return root


@pytest.mark.needs("kernel_headers")
def test_abi_matches_7_2_headers(headers_72, capsys):
    """Every struct size, field offset, ioctl number and constant gmemtest uses matches 7.2;
    the series-only items are checked when the headers have them, else reported absent (not
    drift)."""
    assert main(["abi-check", "--headers", str(headers_72)]) == 0
    out = capsys.readouterr().out
    m = re.search(r"(\d+) items: (\d+) ok, 0 drift, (\d+) absent", out)
    assert m, out
    assert int(m.group(2)) > 200
    has_series = "KVM_SET_MEMORY_ATTRIBUTES2" in (headers_72 / "linux/kvm.h").read_text()
    absent = "struct kvm_memory_attributes2" in out and "KVM_SET_MEMORY_ATTRIBUTES2" in out
    assert absent != has_series


@pytest.mark.host_only  # how the tool reports drift: the same on any kernel
@pytest.mark.needs("kernel_headers")
def test_altered_struct_is_reported(headers_72, tmp_path, capsys):
    """A header whose struct kvm_memory_attributes grew a field in the middle is drift: the
    size and the shifted offsets are in the table and the exit status is non-zero."""
    root = copy_headers(headers_72, tmp_path)
    kvm_h = root / "linux/kvm.h"
    text = kvm_h.read_text()
    altered = re.sub(r"(struct kvm_memory_attributes \{\n\t__u64 address;\n)",
                     r"\1\t__u64 inserted;\n", text)
    assert altered != text
    kvm_h.write_text(altered)
    assert main(["abi-check", "--headers", str(root)]) == 1
    out = capsys.readouterr().out
    drift = [line for line in out.splitlines() if line.endswith("drift")]
    assert any(line.startswith("sizeof(struct kvm_memory_attributes) ") for line in drift), out
    assert any("kvm_memory_attributes, size)" in line for line in drift)
    assert not any("kvm_userspace_memory_region2" in line for line in drift)


@pytest.mark.host_only
@pytest.mark.needs("kernel_headers")
def test_missing_member_is_reported(headers_72, tmp_path):
    """A field gmemtest uses that the headers do not declare is drift, not a crash."""
    root = copy_headers(headers_72, tmp_path)
    kvm_h = root / "linux/kvm.h"
    kvm_h.write_text(kvm_h.read_text().replace("__u64 guest_memfd_offset;", "__u64 gmem_off;"))
    results = abi.check(abi.include_dirs(root))
    bad = [r for r in results if r.status is abi.Status.DRIFT]
    assert [r.name for r in bad] == ["offsetof(struct kvm_userspace_memory_region2, "
                                     "guest_memfd_offset)"]
    assert "no member" in bad[0].problem


@pytest.mark.host_only  # how headers are read: the same on any kernel
def test_revision_read_from_headers(tmp_path):
    """The revision comes from the kernel's own headers: 250 is v8, 252 the applied series;
    headers without the define are a kernel without the series; any other number, headers
    that are not there and a kernel that offers conversion with nothing named are each one
    line saying what to pass, never a default."""
    inc = tmp_path / "include/linux"
    inc.mkdir(parents=True)
    for number, name in ((250, "v8"), (252, "applied")):
        (inc / "kvm.h").write_text(f"#define KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES {number}\n")
        t = rev.determine(headers=tmp_path)
        assert (t.revision.name, t.cap, t.expect) == (name, number, t.revision)
        assert str(inc / "kvm.h") in t.source
    forced = rev.determine(headers=tmp_path, revision="v8")
    assert forced.revision is rev.APPLIED
    assert forced.expect is rev.V8
    assert forced.forced
    (inc / "kvm.h").write_text("#define KVM_CAP_S390_HPAGE_2G 249\n")
    assert rev.determine(headers=tmp_path).revision is None
    (inc / "kvm.h").write_text("#define KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES 261\n")
    with pytest.raises(GmemtestError, match="261 .* is no revision gmemtest knows"):
        rev.determine(headers=tmp_path)
    with pytest.raises(GmemtestError, match="no linux/kvm.h"):
        rev.determine(headers=tmp_path / "nothing")

    class Converts:
        def vm_types(self):
            return [0, 1]

        def check_extension(self, cap):
            return 0

    with pytest.raises(GmemtestError, match="pass --kernel-headers DIR .* or --gmem-attr-cap"):
        rev.determine(kvm=Converts())
    assert rev.determine(cap=250, kvm=Converts()).revision is rev.V8


def test_bad_headers_dir_is_one_line(tmp_path, capsys):
    """A directory without linux/kvm.h is one error line and exit 2."""
    assert main(["abi-check", "--headers", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no linux/kvm.h" in err


@pytest.mark.host_only  # how the switch is read: the same on any kernel
def test_switch_is_read_strictly(tmp_path, monkeypatch):
    """The switch against the conversion capability: no parameter and the cap answering
    PRIVATE is 'always on'; a parameter that disagrees with the cap is a contradiction, an
    error and never a skip; a parameter that cannot be read is an error naming its errno."""
    param = tmp_path / "gmem_in_place_conversion"
    monkeypatch.setattr(rev, "PARAM", param)
    monkeypatch.setattr(rev, "param_on_cmdline", lambda: False)
    applied = rev.Target(rev.APPLIED, 252, "test", rev.APPLIED)

    class Kvm:
        def __init__(self, answer):
            self.answer = answer

        def check_extension(self, cap):
            return self.answer if cap == 252 else 0

    assert rev.switch(Kvm(8), applied) == rev.Switch(None, True, False)
    assert rev.switch(Kvm(0), applied) == rev.Switch(None, False, False)
    param.write_text("Y\n")
    assert rev.switch(Kvm(8), applied).on
    with pytest.raises(GmemtestError, match="contradiction: kvm.gmem_in_place_conversion=1 "
                       "but KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES .252. answers 0"):
        rev.switch(Kvm(0), applied)
    param.write_text("N\n")
    with pytest.raises(GmemtestError, match="contradiction"):
        rev.switch(Kvm(8), applied)
    halfway = rev.Target(None, None, "headers without the define", None)
    assert rev.switch(Kvm(0), halfway) == rev.Switch(False, False, False)
    param.write_text("maybe\n")
    with pytest.raises(GmemtestError, match="reads 'maybe', not Y or N"):
        rev.switch_param()
    param.unlink()
    param.mkdir()
    with pytest.raises(GmemtestError, match="EISDIR"):
        rev.switch_param()
