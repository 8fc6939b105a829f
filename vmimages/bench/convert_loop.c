// SPDX-License-Identifier: GPL-2.0-only
/*
 * The C baseline for gmemtest's conversion round-trip benchmark: the same ioctls the Python
 * layer issues, in a plain loop. A SW_PROTECTED VM with a 1 GiB guest_memfd; for each size, a
 * round trip is one conversion to private and one back to shared, through the guest_memfd
 * (KVM_SET_MEMORY_ATTRIBUTES2, when the kernel offers it) or the VM (KVM_SET_MEMORY_ATTRIBUTES).
 * Each size runs for about `seconds`; one JSON line per size on stdout.
 *
 * usage: convert_loop gmem|vm SECONDS SIZE...
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define FILE_SIZE (1ULL << 30)
#define GPA (4ULL << 30)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int must(int ret, const char *what)
{
	if (ret < 0) {
		fprintf(stderr, "convert_loop: %s: %s\n", what, strerror(errno));
		exit(1);
	}
	return ret;
}

int main(int argc, char **argv)
{
	int kvm, vm, gmem, i, via_gmem;
	double seconds;

	if (argc < 4) {
		fprintf(stderr, "usage: convert_loop gmem|vm SECONDS SIZE...\n");
		return 2;
	}
	via_gmem = !strcmp(argv[1], "gmem");
	seconds = atof(argv[2]);
	kvm = must(open("/dev/kvm", O_RDWR), "open /dev/kvm");
	vm = must(ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM), "KVM_CREATE_VM");
	struct kvm_create_guest_memfd create = {
		.size = FILE_SIZE,
		.flags = via_gmem ? GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED : 0,
	};
	gmem = must(ioctl(vm, KVM_CREATE_GUEST_MEMFD, &create), "KVM_CREATE_GUEST_MEMFD");

	for (i = 3; i < argc; i++) {
		unsigned long long size = strtoull(argv[i], NULL, 0), n = 0;
		double start = now(), elapsed;

		do {
			for (int private = 1; private >= 0; private--) {
				unsigned long long attrs = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;

				if (via_gmem) {
					struct kvm_memory_attributes2 a = {
						.offset = 0, .size = size, .attributes = attrs,
					};
					must(ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a),
					     "KVM_SET_MEMORY_ATTRIBUTES2");
				} else {
					struct kvm_memory_attributes a = {
						.address = GPA, .size = size, .attributes = attrs,
					};
					must(ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, &a),
					     "KVM_SET_MEMORY_ATTRIBUTES");
				}
			}
			n++;
			elapsed = now() - start;
		} while (elapsed < seconds);
		printf("{\"size\": %llu, \"round_trips\": %llu, \"seconds\": %.6f}\n",
		       size, n, elapsed);
	}
	return 0;
}
