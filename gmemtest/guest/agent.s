/*
 * gmemtest guest agent: a 64-bit loop that performs one memory access (or hypercall) per request.
 *
 * The host starts the vCPU in long mode at _start with r15 = mailbox GPA (see gmemtest/agent.py
 * for the page tables and segments it builds). Protocol, like the KVM selftests' ucall:
 *   1. the agent does `out AGENT_PORT`: a KVM_EXIT_IO meaning "previous request done, result in
 *      the mailbox; give me the next one";
 *   2. the host writes a request into the mailbox and resumes the vCPU;
 *   3. the agent performs it, stores the result, and goes back to 1.
 * If the access itself exits (KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, a hypercall exit), the host
 * sees that exit instead of the port write, and resuming the vCPU retries or completes the
 * instruction.
 *
 * Built with `as --64` and `objcopy -O binary`; the code is position independent.
 */
	.intel_syntax noprefix
	.code64

	.set AGENT_PORT, 0x4d47		/* "GM" */

	/* Mailbox: little-endian u64 slots at r15 + offset. Mirrored in gmemtest/agent.py. */
	.set MB_OP, 0x00		/* request code, OP_* below */
	.set MB_GPA, 0x08		/* address to access (identity mapped) */
	.set MB_VALUE, 0x10		/* value to write / add; hypercall nr */
	.set MB_COUNT, 0x18		/* pages to touch; hypercall arg 0 (rbx) */
	.set MB_STRIDE, 0x20		/* bytes between touches; hypercall arg 1 (rcx) */
	.set MB_ARG2, 0x28		/* hypercall arg 2 (rdx) */
	.set MB_ARG3, 0x30		/* hypercall arg 3 (rsi) */
	.set MB_RESULT, 0x38		/* what the request produced */
	.set MB_DONE, 0x40		/* requests completed so far */

	.set OP_READ8, 1		/* result = byte at gpa */
	.set OP_READ64, 2		/* result = qword at gpa */
	.set OP_WRITE8, 3		/* byte at gpa = value */
	.set OP_WRITE64, 4		/* qword at gpa = value */
	.set OP_ADD8, 5			/* lock xadd byte: result = old byte, memory = old + value */
	.set OP_ADD64, 6		/* lock xadd qword */
	.set OP_TOUCH_READ, 7		/* read a byte at gpa + i*stride, i < count; result = sum */
	.set OP_TOUCH_WRITE, 8		/* write value's low byte at gpa + i*stride, i < count */
	.set OP_VMCALL, 9		/* Intel hypercall: rax = value, rbx, rcx, rdx, rsi = args */
	.set OP_VMMCALL, 10		/* AMD hypercall, same registers; result = rax */
	.set OP_HLT, 11			/* hlt, then report */

	.text
	.globl _start
_start:
report:
	incq [r15 + MB_DONE]
	mov dx, AGENT_PORT
	out dx, al
	mov rax, [r15 + MB_OP]
	mov rdi, [r15 + MB_GPA]
	cmp rax, OP_READ8
	je read8
	cmp rax, OP_READ64
	je read64
	cmp rax, OP_WRITE8
	je write8
	cmp rax, OP_WRITE64
	je write64
	cmp rax, OP_ADD8
	je add8
	cmp rax, OP_ADD64
	je add64
	cmp rax, OP_TOUCH_READ
	je touch_read
	cmp rax, OP_TOUCH_WRITE
	je touch_write
	cmp rax, OP_VMCALL
	je hypercall_vmcall
	cmp rax, OP_VMMCALL
	je hypercall_vmmcall
	cmp rax, OP_HLT
	je halt
	mov rax, -1			/* unknown request */
	jmp done

read8:
	movzx eax, byte ptr [rdi]
	jmp done
read64:
	mov rax, [rdi]
	jmp done
write8:
	mov rax, [r15 + MB_VALUE]
	mov [rdi], al
	jmp done
write64:
	mov rax, [r15 + MB_VALUE]
	mov [rdi], rax
	jmp done
add8:
	mov rax, [r15 + MB_VALUE]
	lock xadd [rdi], al
	movzx eax, al
	jmp done
add64:
	mov rax, [r15 + MB_VALUE]
	lock xadd [rdi], rax
	jmp done

touch_read:
	mov rcx, [r15 + MB_COUNT]
	mov rsi, [r15 + MB_STRIDE]
	xor eax, eax
1:	test rcx, rcx
	jz done
	movzx edx, byte ptr [rdi]
	add rax, rdx
	add rdi, rsi
	dec rcx
	jmp 1b

touch_write:
	mov rcx, [r15 + MB_COUNT]
	mov rsi, [r15 + MB_STRIDE]
	mov rax, [r15 + MB_VALUE]
1:	test rcx, rcx
	jz done
	mov [rdi], al
	add rdi, rsi
	dec rcx
	jmp 1b

hypercall_vmcall:
	call load_hypercall_args
	vmcall
	jmp done
hypercall_vmmcall:
	call load_hypercall_args
	vmmcall
	jmp done

load_hypercall_args:
	mov rax, [r15 + MB_VALUE]
	mov rbx, [r15 + MB_COUNT]
	mov rcx, [r15 + MB_STRIDE]
	mov rdx, [r15 + MB_ARG2]
	mov rsi, [r15 + MB_ARG3]
	ret

halt:
	hlt
	xor eax, eax

done:
	mov [r15 + MB_RESULT], rax
	jmp report
