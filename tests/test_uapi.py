"""The uAPI description against the contract's fixed numbers (no kernel needed)."""

import pytest

from gmemtest.guest import assembler
from gmemtest.kvm import uapi

pytestmark = pytest.mark.harness  # tests of gmemtest itself (the guest: the harness boot)


def test_contract_numbers():
    """Sizes and ioctl numbers docs/uapi.md states."""
    ffi = uapi.ffi
    assert ffi.sizeof("struct kvm_memory_attributes2") == 128
    assert ffi.sizeof("struct kvm_create_guest_memfd") == 64
    assert ffi.offsetof("struct kvm_create_guest_memfd", "page_order") == 16
    assert ffi.sizeof("struct kvm_userspace_memory_region2") == 160
    assert ffi.sizeof("struct kvm_memory_attributes") == 32
    assert uapi.KVM_SET_MEMORY_ATTRIBUTES2 == 0xC080AED2
    assert uapi.KVM_SET_MEMORY_ATTRIBUTES & 0xFFFF == uapi.KVM_SET_MEMORY_ATTRIBUTES2 & 0xFFFF
    assert ffi.offsetof("struct kvm_memory_attributes2", "error_offset") == 32


def test_agent_image_is_reproducible():
    """The agent assembles to the same bytes every time, and the port it reports on is the
    one the host driver listens on."""
    from gmemtest.guest.agent import AGENT_PORT

    source = assembler.SOURCE_DIR / "agent.s"
    first, second = assembler.assemble(source), assembler.assemble(source)
    assert first == second == assembler.image("agent")
    assert b"\x66\xba" + AGENT_PORT.to_bytes(2, "little") + b"\xee" in first  # mov dx, PORT; out


def test_compiled_declarations_are_in_use_and_laid_out_as_the_compiler_does():
    """The install compiles cdefs.py (gmemtest/kvm/_uapi_cffi); every field of every struct is
    reachable in it, which in cffi's compiled mode means its declared size is the compiler's
    (a mismatch raises on first use: it caught the hypercall exit's anonymous struct)."""
    import re

    from gmemtest.kvm import cdefs

    assert uapi.COMPILED, ("gmemtest/kvm/_uapi_cffi is not built: install the checkout "
                           "(scripts/bootstrap, or pip install -e .)")
    assert uapi.lib.ioctl is not None
    for name in re.findall(r"^struct (\w+) \{", cdefs.CDEFS, re.M):
        ctype = uapi.ffi.typeof(f"struct {name}")
        if ctype.fields[-1][1].type.kind == "array" and ctype.fields[-1][1].type.length is None:
            continue  # a flexible array member: nothing to allocate
        value = uapi.ffi.new(f"struct {name} *")[0]
        for field, _ in ctype.fields:
            getattr(value, field)


def test_conversion_fast_path_fills_what_the_python_fill_does():
    """The compiled conversion helpers (one call: fill a struct on the C stack, issue the
    ioctl) and the Python fill used where the module is not compiled pass the same struct, and
    a refusal (here EBADF: no kernel object needed) raises the typed error with the arguments
    the call gave, each thread its own."""
    import threading

    import pytest

    from gmemtest.errors import ConversionError
    from gmemtest.kvm.ioctl import Conversion

    ffi = uapi.ffi
    for name, struct, start in (("KVM_SET_MEMORY_ATTRIBUTES", "kvm_memory_attributes", "address"),
                                ("KVM_SET_MEMORY_ATTRIBUTES2", "kvm_memory_attributes2",
                                 "offset")):
        conv = Conversion(name, struct, start, ConversionError)
        assert conv.call is uapi.lib.gmemtest_convert  # compiled (the test above)
        structs = []
        for call, refused in ((conv.call, conv.refused),
                              (conv._call_from_python, conv._refused_from_python)):
            conv._local = threading.local()
            assert call(-1, conv.number, 1 << 32, 3 << 12, 1 << 3, 7) == -1
            assert ffi.errno == 9  # EBADF
            structs.append(bytes(ffi.buffer(ffi.cast(conv.ctype, refused()))))
        assert structs[0] == structs[1]
        assert structs[0][:32] == b"".join(v.to_bytes(8, "little")
                                           for v in (1 << 32, 3 << 12, 1 << 3, 7))
        assert not any(structs[0][32:])  # error_offset and the reserved words zero

        errors = _refusals_from_threads(conv, start)
        assert sorted(errors) == [1, 2]  # each thread saw its own refused struct, every time
        for e in errors.values():
            assert e is not None
            assert (e.call, e.errno_name) == (name, "EBADF")
        with pytest.raises(ConversionError) as e:
            assert conv.call(-1, conv.number, 1 << 32, 3 << 12, 1 << 3, 7) == -1
            conv.fail("fd -1")
        assert e.value.arguments[start] == 1 << 32
        assert e.value.arguments["flags"] == 7


def _refusals_from_threads(conversion, start_field: str) -> dict:
    """Two threads refused 200 times each at once, each with its own start: the error each
    one got last, keyed by thread; None for a thread that once saw the other's arguments."""
    import threading

    from gmemtest.errors import ConversionError

    errors = {}

    def refuse(n: int) -> None:
        for _ in range(200):
            try:
                if conversion.call(-1, conversion.number, n << 12, 1 << 12, 1 << 3, 0) < 0:
                    conversion.fail("fd -1")
            except ConversionError as e:
                errors[n] = e if e.arguments[start_field] == n << 12 else None
                if errors[n] is None:
                    return

    threads = [threading.Thread(target=refuse, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
