#!/usr/bin/env python3
"""Writes the order in which berth's functions first run, for the release link.

The kernel maps a binary's pages 64 KiB at a time ("fault-around"), so the resident size of a
short-lived process is set less by how much code it runs than by how many 64 KiB windows that
code is spread over. Linking the functions that a container start runs next to each other
(lld's --symbol-ordering-file) packs them into few windows; scripts/build-release.sh uses the
file this script writes (docs/benchmark.md has the figures).

How: the binary, built with its symbol table (same code as the release build), is run under
ptrace with a one-shot breakpoint (int3) on the first byte of every function. Each hit is
recorded, the original byte put back, and the process goes on; children forked or cloned are
traced the same way, each with its own copy of the code. The commands run are those of a
container's life: run, create/start/state/kill/delete, exec, and --version.

    sudo scripts/symbol-order.py        # then commit scripts/berth-symbols.order
    scripts/symbol-order.py --remap BINARY ORDER OUT   # (build-release.sh does this)

It builds berth with scripts/build-release.sh, traces the build's unstripped binary on the
benchmark's bundle (bench/config.json and a busybox rootfs) and writes
scripts/berth-symbols.order; the next build-release.sh links by it. Run it again when the
code has moved on: names that are gone are skipped by the linker, new code is left unordered.
The binary runs from a read-only bind mount, which berth takes as protected already, so its
CVE-2019-5736 protection does not re-exec it into a fresh, untraced image.
"""

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import tempfile

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

PTRACE_TRACEME, PTRACE_PEEKTEXT, PTRACE_POKETEXT = 0, 1, 4
PTRACE_CONT, PTRACE_GETREGS, PTRACE_SETREGS = 7, 12, 13
PTRACE_DETACH = 17
PTRACE_SETOPTIONS, PTRACE_GETEVENTMSG = 0x4200, 0x4201
O_TRACEFORK, O_TRACEVFORK, O_TRACECLONE, O_TRACEEXEC = 0x2, 0x4, 0x8, 0x10
O_EXITKILL = 0x100000
EV_FORK, EV_VFORK, EV_CLONE, EV_EXEC = 1, 2, 3, 4
WALL = 0x40000000


class Regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in (
        "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags "
        "rsp ss fs_base gs_base ds es fs gs").split()]


def ptrace(req, pid, addr=0, data=0):
    ctypes.set_errno(0)
    r = libc.ptrace(req, pid, ctypes.c_void_p(addr), ctypes.c_void_p(data))
    err = ctypes.get_errno()
    if r == -1 and err:
        raise OSError(err, os.strerror(err))
    return r


def functions(binary):
    """(address, mangled name) of every function in the symbol table, by address."""
    out = subprocess.run(["nm", "--defined-only", "-S", binary], check=True,
                         capture_output=True, text=True).stdout
    funcs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in ("t", "T", "W", "w"):
            addr, size = int(parts[0], 16), int(parts[1], 16)
            if size > 0:
                funcs.setdefault(addr, parts[3])
    return funcs


class Tracer:
    def __init__(self, funcs):
        self.funcs = funcs
        self.order = []
        self.seen = set()
        # pid -> {address: original byte} still armed in that process
        self.armed = {}
        self.base = None
        # New children stopped before their parent's fork event came: held until it does.
        self.held = set()

    def word(self, pid, addr):
        return ctypes.c_ulong(ptrace(PTRACE_PEEKTEXT, pid, addr)).value

    def arm(self, pid, base):
        saved = {}
        for off in self.funcs:
            a = base + off
            w = self.word(pid, a)
            saved[a] = w & 0xFF
            ptrace(PTRACE_POKETEXT, pid, a, (w & ~0xFF) | 0xCC)
        self.armed[pid] = saved

    def hit(self, pid):
        regs = Regs()
        ptrace(PTRACE_GETREGS, pid, 0, ctypes.addressof(regs))
        a = regs.rip - 1
        saved = self.armed.get(pid, {})
        if a not in saved:
            return False
        w = self.word(pid, a)
        ptrace(PTRACE_POKETEXT, pid, a, (w & ~0xFF) | saved.pop(a))
        regs.rip = a
        ptrace(PTRACE_SETREGS, pid, 0, ctypes.addressof(regs))
        name = self.funcs[a - self.base]
        if name not in self.seen:
            self.seen.add(name)
            self.order.append(name)
        return True

    def release(self, pid):
        """Stops `pid`, puts back every byte still armed in it, and detaches."""
        try:
            os.kill(pid, signal.SIGSTOP)
            while True:
                p, status = os.waitpid(pid, WALL)
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    return
                if os.WSTOPSIG(status) == signal.SIGSTOP and status >> 16 == 0:
                    break
                ptrace(PTRACE_CONT, pid, 0, 0)
            for a, byte in self.armed.pop(pid, {}).items():
                w = self.word(pid, a)
                ptrace(PTRACE_POKETEXT, pid, a, (w & ~0xFF) | byte)
            ptrace(PTRACE_DETACH, pid, 0, 0)
        except (OSError, ChildProcessError):
            pass

    def run(self, argv, exe):
        pid = os.fork()
        if pid == 0:
            ptrace(PTRACE_TRACEME, 0)
            os.kill(os.getpid(), signal.SIGSTOP)
            os.execv(exe, argv)
        os.waitpid(pid, 0)
        ptrace(PTRACE_SETOPTIONS, pid, 0,
               O_TRACEFORK | O_TRACEVFORK | O_TRACECLONE | O_TRACEEXEC | O_EXITKILL)
        ptrace(PTRACE_CONT, pid)
        # The stop at exec: the image is loaded, arm it.
        _, status = os.waitpid(pid, WALL)
        assert os.WIFSTOPPED(status) and (status >> 16) == EV_EXEC, hex(status)
        with open(f"/proc/{pid}/maps") as maps:
            real = os.path.realpath(exe)
            starts = [int(l.split("-")[0], 16) for l in maps
                      if l.split()[-1] in (exe, real) and l.split()[2] == "00000000"]
        self.base = min(starts)
        self.arm(pid, self.base)
        ptrace(PTRACE_CONT, pid)
        live = {pid}
        exit_status = None
        while live:
            p, status = os.waitpid(-1, WALL)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                live.discard(p)
                self.armed.pop(p, None)
                if p == pid:
                    exit_status = status
                    # What outlives the command (a created container's init, waiting
                    # for start) is disarmed and let go.
                    for q in list(live):
                        self.release(q)
                    live.clear()
                continue
            sig = os.WSTOPSIG(status)
            event = status >> 16
            deliver = 0
            if event in (EV_FORK, EV_VFORK, EV_CLONE):
                child = ctypes.c_ulong()
                ptrace(PTRACE_GETEVENTMSG, p, 0, ctypes.addressof(child))
                c = child.value
                # The child has the parent's armed code, as it was at the fork.
                self.armed[c] = dict(self.armed.get(p, {}))
                live.add(c)
                if c in self.held:
                    self.held.discard(c)
                    ptrace(PTRACE_CONT, c)
            elif event == EV_EXEC:
                # Another program (the container's process): nothing of ours to trace.
                self.armed[p] = {}
            elif sig == signal.SIGTRAP:
                if not self.hit(p):
                    deliver = sig
            elif sig == signal.SIGSTOP and p not in self.armed:
                # A new child, ahead of its parent's event: hold it until its code is known.
                self.held.add(p)
                live.add(p)
                continue
            elif sig != signal.SIGSTOP:
                deliver = sig
            try:
                ptrace(PTRACE_CONT, p, 0, deliver)
            except OSError:
                live.discard(p)
        return exit_status


def remap(binary, order_file, out_file):
    """Writes ORDER_FILE's names as BINARY has them now.

    A Rust symbol's name ends in a hash of its crate's build metadata, which changes when
    the crate's dependencies do: the traced order then names functions that are still
    there under other names. Matched without that hash (every instance of a generic
    function shares the rest), they are found again.
    """
    import re
    strip = re.compile(r"17h[0-9a-f]{16}E$")
    current = {}
    for name in functions(binary).values():
        current.setdefault(strip.sub("E", name), []).append(name)
    have = {n for names in current.values() for n in names}
    out, seen = [], set()
    for line in open(order_file):
        name = line.strip()
        found = [name] if name in have else current.get(strip.sub("E", name), [])
        for n in found:
            if n not in seen:
                seen.add(n)
                out.append(n)
    with open(out_file, "w") as f:
        f.write("".join(n + "\n" for n in out))


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--remap":
        remap(*sys.argv[2:])
        return
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(repo, "scripts", "berth-symbols.order")
    stripped = subprocess.run(["bash", os.path.join(repo, "scripts", "build-release.sh")],
                              check=True, capture_output=True, text=True).stdout.strip()
    binary = stripped.removesuffix(".stripped")
    funcs = functions(binary)
    if not funcs:
        sys.exit(f"{binary} has no symbol table")
    with tempfile.TemporaryDirectory(prefix="berth-order-") as work:
        bundle = os.path.join(work, "bundle")
        os.makedirs(bundle)
        subprocess.run(["sh", os.path.join(repo, "tests", "support", "busybox-rootfs.sh"),
                        os.path.join(bundle, "rootfs")], check=True)
        subprocess.run(["cp", os.path.join(repo, "bench", "config.json"), bundle], check=True)
        ro = os.path.join(work, "berth")
        open(ro, "w").close()
        subprocess.run(["mount", "--bind", binary, ro], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", ro], check=True)
        try:
            root = os.path.join(work, "state")
            t = Tracer(funcs)
            rt = [ro, "--root", root]
            steps = [
                rt + ["--version"],
                rt + ["run", "--bundle", bundle, "order-run"],
                rt + ["create", "--bundle", bundle, "order-cycle"],
                rt + ["state", "order-cycle"],
                rt + ["start", "order-cycle"],
                rt + ["delete", "--force", "order-cycle"],
                rt + ["list"],
            ]
            for argv in steps:
                status = t.run(argv, ro)
                ok = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
                print(f"{' '.join(argv[3:4])}: {len(t.order)} functions so far"
                      + ("" if ok else f" (exit status {status})"), file=sys.stderr)
        finally:
            subprocess.run(["umount", ro], check=False)
    with open(out, "w") as f:
        f.write("".join(name + "\n" for name in t.order))
    print(f"{out}: {len(t.order)} of {len(funcs)} functions", file=sys.stderr)


if __name__ == "__main__":
    main()
