#!/usr/bin/env python3
"""Runs a command with a custom scheduler time slice (Linux 6.12 or later, EEVDF).

    scripts/with-slice.py NANOSECONDS COMMAND [ARG ...]

Sets the calling thread's slice with sched_setattr(2) (policy SCHED_OTHER, sched_runtime =
NANOSECONDS; the kernel clamps it to 0.1-100 ms) and then execs COMMAND, whose threads
inherit it. Check with `grep se.slice /proc/<pid>/sched`. docs/performance.md ("How long
a woken thread waits for a CPU here") uses it to show that the wake-up wait of a thread
of normal priority under load is the time slice.
"""
import ctypes
import os
import struct
import sys

SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}


def main():
    if len(sys.argv) < 3 or not sys.argv[1].isdigit():
        sys.exit(__doc__)
    nanos = int(sys.argv[1])
    number = SYS_SCHED_SETATTR.get(os.uname().machine)
    if number is None:
        sys.exit(f"with-slice: no sched_setattr number known for {os.uname().machine}")
    # struct sched_attr, first version (56 bytes): size, policy, flags, nice, priority,
    # runtime, deadline, period, util_min, util_max.
    attr = ctypes.create_string_buffer(struct.pack("IIQiIQQQII", 56, 0, 0, 0, 0, nanos, 0, 0, 0, 0), 56)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, 0, attr, 0) != 0:
        sys.exit(f"with-slice: sched_setattr: {os.strerror(ctypes.get_errno())}")
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as e:
        sys.exit(f"with-slice: cannot run {sys.argv[2]}: {e}")


if __name__ == "__main__":
    main()
