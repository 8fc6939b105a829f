"""The raw layer: the uAPI described once (structs, ioctl numbers, constants), ioctls issued by
name, and the object graph of the KVM selftests' library (a Kvm makes VMs; a Vm owns its
memslots, guest_memfd files and vCPUs). It forwards what it is given: validation is the
kernel's, and that is what the suite tests."""
