"""`gmemtest abi-check` against real 7.2 uapi headers (Debian's linux-libc-dev 7.2.x)."""

import os
import re
import shutil
from pathlib import Path

import pytest

from gmemtest import abi
from gmemtest.cli import main
from gmemtest.kvm import seriesconf
from gmemtest.vmtier import debian


@pytest.fixture(scope="session")
def headers_72() -> Path:
    """The uapi headers of the kernel under test when the run names them (in the guest: the
    build's), else Debian's linux-libc-dev 7.2.x."""
    named = os.environ.get(seriesconf.ENV_HEADERS)
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
    bad = [r for r in results if r.status == "drift"]
    assert [r.name for r in bad] == ["offsetof(struct kvm_userspace_memory_region2, "
                                     "guest_memfd_offset)"]
    assert "no member" in bad[0].problem


@pytest.mark.needs("kernel_headers")
def test_series_cap_read_from_headers(headers_72, tmp_path, monkeypatch):
    """A tree that defines KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES supplies the number."""
    monkeypatch.delenv(seriesconf.ENV_CAP, raising=False)
    inc = tmp_path / "include/linux"
    inc.mkdir(parents=True)
    (inc / "kvm.h").write_text("#define KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES 261\n")
    assert seriesconf.conversion_cap(headers=tmp_path) == seriesconf.Resolved(
        261, str(inc / "kvm.h"))
    in_72 = seriesconf.define_in(headers_72 / "linux/kvm.h", seriesconf.CAP_NAME)
    assert seriesconf.conversion_cap(headers=headers_72).value == (in_72 or seriesconf.V8_DEFAULT)
    monkeypatch.setenv(seriesconf.ENV_CAP, "0xf9")
    assert seriesconf.conversion_cap(headers=tmp_path).value == 249
    assert seriesconf.conversion_cap(7, headers=tmp_path) == seriesconf.Resolved(7, "option")


def test_bad_headers_dir_is_one_line(tmp_path, capsys):
    """A directory without linux/kvm.h is one error line and exit 2."""
    assert main(["abi-check", "--headers", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no linux/kvm.h" in err
