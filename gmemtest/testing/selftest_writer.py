# ruff: noqa: E101 (the C it writes is indented with tabs, as the kernel's is)
"""A model scenario as a KVM selftest in C: the steps of a :class:`~gmemtest.testing.model.Scenario`
(what the model fuzzer's minimal reproducer replays, or a finding written in the model's words)
become a standalone program on the selftests' own library (kvm_util.h, TEST_ASSERT, ucall),
with what the model says the kernel must show asserted after each step.

The C program does what the scenario does: one KVM_X86_SW_PROTECTED_VM with one vCPU, N pages
of guest_memfd bound at 4 GiB by one memslot, converted in place (KVM_SET_MEMORY_ATTRIBUTES2 on
the guest_memfd, which is mmap()ed for the host's view: the gmem route) or through per-VM
attributes (KVM_SET_MEMORY_ATTRIBUTES, with an anonymous shared backing: the vm-attributes
route). The guest runs a loop that makes one access the host asked for and reports the byte it
then reads with GUEST_SYNC; the host reads and writes through /proc/self/mem, so that a view
the kernel must refuse fails the read instead of killing the test with SIGBUS.

Pins and injected allocation failures need the harness (gup_test, failslab) and are not
written: a scenario with them is refused, naming the step.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from gmemtest.errors import GmemtestError
from gmemtest.kvm.exits import MemoryFault

from .model import Model

ROUTES = ("gmem", "vm-attributes")
# The model's operations a selftest can do, and the arguments each takes (after the pages).
OPS = {"convert": 2, "split": 2, "guest_write": 2, "guest_read": 1, "host_write": 2,
       "host_read": 1, "punch": 2, "pre_fault": 2, "memslot_cycle": 1, "verify": 0}
HARNESS_ONLY = {"pin": "a long-term pin (CONFIG_GUP_TEST's gup_test)",
                "unpin": "a long-term pin (CONFIG_GUP_TEST's gup_test)",
                "convert_failing": "an injected allocation failure (failslab)",
                "check_health": None}


@dataclass(frozen=True)
class Step:
    op: str
    args: tuple[int, ...]
    private: bool | None = None


@dataclass(frozen=True)
class Script:
    """A scenario: its route, its number of pages and its steps."""

    route: str
    pages: int
    steps: tuple[Step, ...]


def _int(node: ast.expr, where: str) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int and node.value >= 0:
        return node.value
    raise GmemtestError(f"{where}: {ast.unparse(node)} is not a page number or byte")


def read_script(text: str, where: str) -> Script:
    """The scenario of a reproducer (``with Scenario.open(ROUTE, PAGES) as s:`` and one
    ``s.OP(...)`` per line, as the model fuzzer writes it); one line for anything else."""
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise GmemtestError(f"{where}: not a scenario (line {e.lineno}: {e.msg})") from None
    block = next((n for n in ast.walk(tree) if isinstance(n, ast.With)), None)
    call = block.items[0].context_expr if block is not None and block.items else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "open" and 1 <= len(call.args) <= 2):
        raise GmemtestError(f"{where}: no `with Scenario.open(ROUTE, PAGES) as s:` block")
    route = call.args[0].value if isinstance(call.args[0], ast.Constant) else None
    if route not in ROUTES:
        raise GmemtestError(f"{where}: route {ast.unparse(call.args[0])}: not one of "
                            f"{', '.join(ROUTES)}")
    pages = _int(call.args[1], where) if len(call.args) == 2 else 8
    assert block is not None
    steps = []
    for stmt in block.body:
        line = f"{where}:{stmt.lineno}"
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                and isinstance(stmt.value.func, ast.Attribute)):
            raise GmemtestError(f"{line}: not a step of the scenario: {ast.unparse(stmt)}")
        op, node = stmt.value.func.attr, stmt.value
        if op in HARNESS_ONLY:
            if HARNESS_ONLY[op] is None:  # the selftest's boot checks the kernel's health
                continue
            raise GmemtestError(f"{line}: {op}() needs {HARNESS_ONLY[op]}, which a KVM "
                                "selftest does not have: leave the step out")
        if op not in OPS or len(node.args) != OPS[op]:
            raise GmemtestError(f"{line}: {ast.unparse(node)}: not a step a selftest can do "
                                f"({', '.join(OPS)})")
        args = tuple(_int(a, line) for a in node.args)
        private = None
        for kw in node.keywords:
            if kw.arg != "private" or not isinstance(kw.value, ast.Constant) \
                    or type(kw.value.value) is not bool:
                raise GmemtestError(f"{line}: {ast.unparse(node)}: only private=True/False")
            private = kw.value.value
        if op in ("convert", "split") and private is None:
            raise GmemtestError(f"{line}: {op}() says private=True or private=False")
        ranged = op in ("convert", "split", "punch", "pre_fault")
        if args and args[0] + (args[1] if ranged else 1) > pages:
            raise GmemtestError(f"{line}: {ast.unparse(node)} goes past the {pages} pages")
        steps.append(Step(op, args, private))
    return Script(route, pages, tuple(steps))


# --- the C program ---------------------------------------------------------------------------

HEADER = """\
// SPDX-License-Identifier: GPL-2.0-only
/*
{comment}
 */
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/kvm.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kvm_util.h"
#include "processor.h"
#include "test_util.h"
#include "ucall_common.h"

#define DATA_GPA	0x100000000ULL
#define DATA_SLOT	1
#define NR_PAGES	{pages}ULL

enum access {{ GUEST_READ, GUEST_WRITE }};

/* The access the host asks the guest for, before each KVM_RUN. */
static enum access access_op;
static u64 access_gpa;
static u8 access_value;

static void guest_code(void)
{{
	for (;;) {{
		u8 *p = (u8 *)access_gpa;

		if (access_op == GUEST_WRITE)
			WRITE_ONCE(*p, access_value);
		GUEST_SYNC(READ_ONCE(*p));
	}}
}}

struct scenario {{
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	int gmem_fd;
	int mem_fd;		/* /proc/self/mem: the host's accesses */
	u8 *shared;	/* the host's view, the memslot's userspace_addr */
}};
"""

MEMSLOT = """
static void memslot_set(struct scenario *s, u64 size)
{
	vm_set_user_memory_region2(s->vm, DATA_SLOT, KVM_MEM_GUEST_MEMFD, DATA_GPA,
				   size, s->shared, s->gmem_fd, 0);
}
"""

SETUP = {"gmem": """
static void scenario_init(struct scenario *s)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SW_PROTECTED_VM,
	};

	/* Beyond the defaults: the guest's page tables for the pages under test. */
	s->vm = __vm_create_shape_with_one_vcpu(shape, &s->vcpu, NR_PAGES / 512 + 8,
						guest_code);
	TEST_REQUIRE(vm_check_cap(s->vm, KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES) &
		     KVM_MEMORY_ATTRIBUTE_PRIVATE);
	s->gmem_fd = vm_create_guest_memfd(s->vm, NR_PAGES * PAGE_SIZE,
					   GUEST_MEMFD_FLAG_MMAP |
					   GUEST_MEMFD_FLAG_INIT_SHARED);
	s->shared = mmap(NULL, NR_PAGES * PAGE_SIZE, PROT_READ | PROT_WRITE,
			 MAP_SHARED, s->gmem_fd, 0);
	TEST_ASSERT(s->shared != MAP_FAILED, "mmap() of the guest_memfd failed");
	s->mem_fd = open("/proc/self/mem", O_RDWR);
	TEST_ASSERT(s->mem_fd >= 0, "open(/proc/self/mem) failed");
	memslot_set(s, NR_PAGES * PAGE_SIZE);
	virt_map(s->vm, DATA_GPA, DATA_GPA, NR_PAGES);
}
""", "vm-attributes": """
static void scenario_init(struct scenario *s)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SW_PROTECTED_VM,
	};

	TEST_REQUIRE(kvm_check_cap(KVM_CAP_MEMORY_ATTRIBUTES) &
		     KVM_MEMORY_ATTRIBUTE_PRIVATE);
	/* Beyond the defaults: the guest's page tables for the pages under test. */
	s->vm = __vm_create_shape_with_one_vcpu(shape, &s->vcpu, NR_PAGES / 512 + 8,
						guest_code);
	s->gmem_fd = vm_create_guest_memfd(s->vm, NR_PAGES * PAGE_SIZE, 0);
	s->shared = mmap(NULL, NR_PAGES * PAGE_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(s->shared != MAP_FAILED, "mmap() of the shared backing failed");
	s->mem_fd = open("/proc/self/mem", O_RDWR);
	TEST_ASSERT(s->mem_fd >= 0, "open(/proc/self/mem) failed");
	memslot_set(s, NR_PAGES * PAGE_SIZE);
	virt_map(s->vm, DATA_GPA, DATA_GPA, NR_PAGES);
}
"""}

CONVERT = {"gmem": """
static void convert(struct scenario *s, u64 first, u64 count,
		    bool private)
{
	struct kvm_memory_attributes2 attr = {
		.offset = first * PAGE_SIZE,
		.size = count * PAGE_SIZE,
		.attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
	};
	int r = ioctl(s->gmem_fd, KVM_SET_MEMORY_ATTRIBUTES2, &attr);

	TEST_ASSERT(!r, "converting pages [%lu, %lu) to %s failed: errno %d, error_offset 0x%llx",
		    first, first + count, private ? "private" : "shared", errno,
		    attr.error_offset);
}
""", "vm-attributes": """
static void convert(struct scenario *s, u64 first, u64 count,
		    bool private)
{
	vm_set_memory_attributes(s->vm, DATA_GPA + first * PAGE_SIZE,
				 count * PAGE_SIZE,
				 private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0);
}
"""}

SPLIT = """
/* Every other page of [first, first + count), one conversion each. */
static void split(struct scenario *s, u64 first, u64 count, bool private)
{
	u64 page;

	for (page = first; page < first + count; page += 2)
		convert(s, page, 1, private);
}
"""

GUEST = """
static void guest_access_start(struct scenario *s, enum access op, u64 page,
			       u8 value)
{
	access_op = op;
	access_gpa = DATA_GPA + page * PAGE_SIZE;
	access_value = value;
	sync_global_to_guest(s->vm, access_op);
	sync_global_to_guest(s->vm, access_gpa);
	sync_global_to_guest(s->vm, access_value);
}

/* Run the guest to the end of its access: returns the byte it read. */
static u8 guest_access_end(struct scenario *s, u64 page)
{
	struct ucall uc;
	int r = __vcpu_run(s->vcpu);

	TEST_ASSERT(!r && get_ucall(s->vcpu, &uc) == UCALL_SYNC,
		    "guest access to page %lu did not complete: KVM_RUN %d (errno %d), exit %s",
		    page, r, r ? errno : 0, exit_reason_str(s->vcpu->run->exit_reason));
	return uc.args[1];
}

static u8 guest_access(struct scenario *s, enum access op, u64 page,
		       u8 value)
{
	guest_access_start(s, op, page, value);
	return guest_access_end(s, page);
}

static void guest_read(struct scenario *s, u64 page, u8 expected)
{
	u8 got = guest_access(s, GUEST_READ, page, 0);

	TEST_ASSERT(got == expected, "guest read of page %lu: 0x%x, expected 0x%x",
		    page, got, expected);
}
"""

HOST = """
/* Byte 0 of a page through the host's view: -1 when the kernel refuses it. */
static int host_peek(struct scenario *s, u64 page)
{
	u8 byte;
	off_t at = (off_t)(uintptr_t)(s->shared + page * PAGE_SIZE);

	return pread(s->mem_fd, &byte, 1, at) == 1 ? byte : -1;
}

static void host_read(struct scenario *s, u64 page, int expected)
{
	int got = host_peek(s, page);

	TEST_ASSERT(got == expected, "host read of page %lu: %d, expected %d (-1: refused)",
		    page, got, expected);
}
"""

HOST_WRITE = """
static void host_write(struct scenario *s, u64 page, u8 value,
		       bool refused)
{
	off_t at = (off_t)(uintptr_t)(s->shared + page * PAGE_SIZE);
	bool written = pwrite(s->mem_fd, &value, 1, at) == 1;

	TEST_ASSERT(written != refused, "host write to page %lu %s",
		    page, written ? "succeeded, expected it refused" : "was refused");
}
"""

PUNCH = """
static void punch(struct scenario *s, u64 first, u64 count)
{
	int r = fallocate(s->gmem_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			  first * PAGE_SIZE, count * PAGE_SIZE);

	TEST_ASSERT(!r, "punching pages [%lu, %lu) failed: errno %d",
		    first, first + count, errno);
}
"""

PRE_FAULT = """
static void pre_fault(struct scenario *s, u64 first, u64 count)
{
	struct kvm_pre_fault_memory range = {
		.gpa = DATA_GPA + first * PAGE_SIZE,
		.size = count * PAGE_SIZE,
	};

	while (range.size)
		vcpu_ioctl(s->vcpu, KVM_PRE_FAULT_MEMORY, &range);
}
"""

MEMSLOT_CYCLE = """
/*
 * Delete the memslot; a guest read of the page exits (MMIO, or MEMORY_FAULT for
 * a private page of per-VM attributes); add the memslot back as it was and let
 * the read complete, then read the page again.
 */
static void memslot_cycle(struct scenario *s, u64 page, bool memory_fault,
			  u8 expected)
{
	u64 gpa = DATA_GPA + page * PAGE_SIZE;
	struct kvm_run *run = s->vcpu->run;
	int r;

	memslot_set(s, 0);
	guest_access_start(s, GUEST_READ, page, 0);
	r = __vcpu_run(s->vcpu);
	if (memory_fault)
		TEST_ASSERT(r == -1 && errno == EFAULT &&
			    run->exit_reason == KVM_EXIT_MEMORY_FAULT &&
			    run->memory_fault.gpa == gpa &&
			    (run->memory_fault.flags & KVM_MEMORY_EXIT_FLAG_PRIVATE),
			    "read of page %lu without its memslot: exit %s, expected a private memory fault",
			    page, exit_reason_str(run->exit_reason));
	else
		TEST_ASSERT(!r && run->exit_reason == KVM_EXIT_MMIO &&
			    run->mmio.phys_addr == gpa,
			    "read of page %lu without its memslot: exit %s, expected MMIO",
			    page, exit_reason_str(run->exit_reason));
	memslot_set(s, NR_PAGES * PAGE_SIZE);
	guest_access_end(s, page);
	guest_read(s, page, expected);
}
"""

FINISH = """
static void scenario_finish(struct scenario *s)
{
	close(s->mem_fd);
	kvm_vm_free(s->vm);
	munmap(s->shared, NR_PAGES * PAGE_SIZE);
	close(s->gmem_fd);
}
"""


def _runs(values: list[int]) -> list[tuple[int, int, tuple[int, ...]]]:
    """(first, count, pattern) covering ``values``: a run of one value repeated, or of two
    values alternating (what split() leaves), each as long as it goes."""
    out: list[tuple[int, int, tuple[int, ...]]] = []
    i = 0
    while i < len(values):
        same = i
        while same < len(values) and values[same] == values[i]:
            same += 1
        pair = i
        while pair + 1 < len(values) and values[pair] == values[i] \
                and values[pair + 1] == values[i + 1] != values[i]:
            pair += 2
        if pair - i >= 8 and pair - i > same - i:
            out.append((i, pair - i, (values[i], values[i + 1])))
            i = pair
        else:
            out.append((i, same - i, (values[i],)))
            i = same
    return out


def _host(model: Model, page: int) -> int:
    """What host_read() expects: the byte, or -1 where the kernel refuses the host's view."""
    view = model.host_view(page)
    return -1 if view is None else view


def _verify(model: Model) -> list[str]:
    """Every page read by the guest and the host, as loops over runs of its bytes."""
    lines = []
    guest = [model.expect_byte(p) for p in range(len(model.pages))]
    host = [_host(model, p) for p in range(len(model.pages))]
    for name, values, fmt in (("guest_read", guest, "0x{:x}"), ("host_read", host, "{}")):
        for first, count, pattern in _runs(values):
            shown = [fmt.format(v) for v in pattern]
            if count == 1:
                lines.append(f"\t{name}(&s, {first}, {shown[0]});")
            elif len(pattern) == 1:
                lines += [f"\tfor (page = {first}; page < {first + count}; page++)",
                          f"\t\t{name}(&s, page, {shown[0]});"]
            else:
                lines += [f"\tfor (page = {first}; page < {first + count}; page += 2) {{",
                          f"\t\t{name}(&s, page, {shown[0]});",
                          f"\t\t{name}(&s, page + 1, {shown[1]});", "\t}"]
    return lines


def c_source(script: Script, comment: list[str]) -> str:
    """The selftest's C source. ``comment``: the lines of its head comment."""
    model = Model(script.pages, script.route == "gmem")
    steps = list(script.steps)
    if not steps or steps[-1].op != "verify":  # as the reproducer ends: every page checked
        steps.append(Step("verify", ()))
    body: list[str] = []
    used: set[str] = set()
    for step in steps:
        a = step.args
        if step.op == "convert":
            assert step.private is not None
            body.append(f"\tconvert(&s, {a[0]}, {a[1]}, {str(step.private).lower()});")
            model.converted(a[0], a[1], step.private)
        elif step.op == "split":
            assert step.private is not None
            body.append(f"\tsplit(&s, {a[0]}, {a[1]}, {str(step.private).lower()});")
            for page in range(a[0], a[0] + a[1], 2):
                model.converted(page, 1, step.private)
            used.add("convert")
        elif step.op == "guest_write":
            body.append(f"\tguest_access(&s, GUEST_WRITE, {a[0]}, 0x{a[1]:x});")
            model.guest_wrote(a[0], a[1])
        elif step.op == "guest_read":
            body.append(f"\tguest_read(&s, {a[0]}, 0x{model.expect_byte(a[0]):x});")
        elif step.op == "host_write":
            blocked = model.host_blocked(a[0])
            body.append(f"\thost_write(&s, {a[0]}, 0x{a[1]:x}, {str(blocked).lower()});")
            if not blocked:
                model.pages[a[0]].shared = a[1]
            used.add("host")
        elif step.op == "host_read":
            body.append(f"\thost_read(&s, {a[0]}, {_host(model, a[0])});")
        elif step.op == "punch":
            body.append(f"\tpunch(&s, {a[0]}, {a[1]});")
            model.punched(a[0], a[1])
        elif step.op == "pre_fault":
            body.append(f"\tpre_fault(&s, {a[0]}, {a[1]});")
        elif step.op == "memslot_cycle":
            fault = model.memslot_exit(a[0]) is MemoryFault
            body.append(f"\tmemslot_cycle(&s, {a[0]}, {str(fault).lower()}, "
                        f"0x{model.expect_byte(a[0]):x});")
        elif step.op == "verify":
            body += _verify(model)
            used.add("host")
            used.add("page")
        used.add(step.op)
    comment_text = "\n".join(f" * {line}".rstrip() for line in comment)
    parts = [HEADER.format(comment=comment_text, pages=script.pages), MEMSLOT,
             SETUP[script.route]]
    if used & {"convert", "split"}:
        parts.append(CONVERT[script.route])
    if "split" in used:
        parts.append(SPLIT)
    parts.append(GUEST)
    if "host" in used or "host_read" in used:
        parts.append(HOST)
    if "host_write" in used:
        parts.append(HOST_WRITE)
    for op, text in (("punch", PUNCH), ("pre_fault", PRE_FAULT),
                     ("memslot_cycle", MEMSLOT_CYCLE)):
        if op in used:
            parts.append(text)
    parts.append(FINISH)
    main = ["", "int main(void)", "{", "\tstruct scenario s;"]
    if "page" in used:
        main.append("\tu64 page;")
    main += ["", "\tTEST_REQUIRE(kvm_check_cap(KVM_CAP_VM_TYPES) &",
             "\t\t     BIT(KVM_X86_SW_PROTECTED_VM));", "", "\tscenario_init(&s);", "",
             *body, "", "\tscenario_finish(&s);", "\treturn 0;", "}"]
    return "".join(parts) + "\n".join(main) + "\n"
