//! Loads compiled filters into forked children and checks what the kernel
//! then does to their syscalls.
//!
//! The filter is compiled in the test process; only the forked child loads
//! it. After `fork` the child makes raw syscalls only (prctl, seccomp through
//! `Filter::load`, which does not allocate, and the syscall under test) and
//! leaves with `_exit`, so locks held by the harness's other threads do not
//! matter. The child reports through its exit status: the errno of the
//! syscall under test, 0 for success, or one of the `CHILD_*` codes when its
//! own set-up failed.
//!
//! Children set `no_new_privs` before loading, so these tests need no
//! privilege, except `load_without_no_new_privs_*`, which checks both sides.

use std::fs::File;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use berth_seccomp::{compile, names, supported_archs, supported_flags, Filter};
use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags, ScmpSyscall};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// The child could not set itself up (prctl failed).
const CHILD_SETUP_FAILED: i32 = 200;
/// `Filter::load` failed in the child.
const CHILD_LOAD_FAILED: i32 = 201;
/// `Filter::load` returned a notify fd when none was expected, or none when
/// one was.
const CHILD_WRONG_FD: i32 = 202;
/// The child could not pass its notify fd number to the parent.
const CHILD_PIPE_FAILED: i32 = 203;
/// `Filter::load` failed with an error that carries no errno.
const CHILD_NO_ERRNO: i32 = 204;

const PERSONALITY_QUERY: u64 = 0xffff_ffff;
const PER_LINUX: u64 = 0;
const PER_LINUX32: u64 = 0x0008;
const UNAME26: u64 = 0x0002_0000;

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Exited(i32),
    Signaled(i32),
}

#[derive(Clone, Copy)]
struct Setup {
    no_new_privs: bool,
    /// Whether the child may dump core; off for children that the filter
    /// kills, so that a test run leaves no core files.
    dumpable: bool,
}

const NNP: Setup = Setup {
    no_new_privs: true,
    dumpable: true,
};
const NNP_NO_CORE: Setup = Setup {
    no_new_privs: true,
    dumpable: false,
};

/// A forked child; killed and reaped on drop if the test did not wait for it.
struct Child {
    pid: libc::pid_t,
    reaped: bool,
}

impl Child {
    fn wait(mut self) -> Outcome {
        let mut status = 0;
        loop {
            // SAFETY: `status` is a valid, writable c_int for the call; waitpid
            // on our own child has no other memory effects.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if rc == self.pid {
                break;
            }
            let err = io::Error::last_os_error();
            assert_eq!(err.kind(), io::ErrorKind::Interrupted, "waitpid: {err}");
        }
        self.reaped = true;
        if libc::WIFEXITED(status) {
            Outcome::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Outcome::Signaled(libc::WTERMSIG(status))
        } else {
            panic!("unexpected wait status {status:#x}");
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: `pid` is our unreaped child, so the pid cannot have been
            // reused; kill and waitpid with a null status pointer touch no
            // memory of ours.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Forks a child that loads `filter` and exits with `body`'s result. `body`
/// receives what `load` returned and must only make raw syscalls.
fn spawn(filter: &Filter, setup: Setup, body: impl FnOnce(Option<OwnedFd>) -> i32) -> Child {
    // SAFETY: fork has no memory-safety preconditions. The child only makes
    // async-signal-safe calls (see `child_main`) and leaves through `_exit`,
    // never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        let code = child_main(filter, setup, body);
        // SAFETY: `_exit` ends the child without running destructors or
        // atexit handlers, which belong to the parent's state.
        unsafe { libc::_exit(code) }
    }
    Child { pid, reaped: false }
}

fn child_main(filter: &Filter, setup: Setup, body: impl FnOnce(Option<OwnedFd>) -> i32) -> i32 {
    if !setup.dumpable {
        // SAFETY: PR_SET_DUMPABLE takes plain integers and changes only
        // this (child) process's dumpable attribute.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return CHILD_SETUP_FAILED;
        }
    }
    if setup.no_new_privs {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers and changes only
        // this (child) process's no_new_privs bit.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return CHILD_SETUP_FAILED;
        }
    }
    match filter.load() {
        Ok(fd) => body(fd),
        Err(_) => CHILD_LOAD_FAILED,
    }
}

/// Runs `syscall` in a child under `filter` and returns how the child ended.
/// The child fails if `load` returns a notify fd.
fn run(filter: &Filter, setup: Setup, syscall: impl FnOnce() -> i32) -> Outcome {
    spawn(filter, setup, |fd| {
        if fd.is_some() {
            CHILD_WRONG_FD
        } else {
            syscall()
        }
    })
    .wait()
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// uname(2); 0 on success, else the errno.
fn uname() -> i32 {
    let mut buf = MaybeUninit::<libc::utsname>::uninit();
    // SAFETY: uname writes one `utsname` into `buf`, which is exactly that
    // size and outlives the call.
    if unsafe { libc::uname(buf.as_mut_ptr()) } == 0 {
        0
    } else {
        errno()
    }
}

/// personality(2) through the raw syscall, so the full 64-bit argument
/// reaches the filter; 0 on success, else the errno.
fn personality(persona: u64) -> i32 {
    // SAFETY: personality takes one integer and changes at most this
    // (child) process's execution domain.
    if unsafe { libc::syscall(libc::SYS_personality, persona) } < 0 {
        errno()
    } else {
        0
    }
}

/// getpriority(2) through the raw syscall (which returns 20 - nice, never
/// negative); 0 on success, else the errno.
fn getpriority(which: u64, who: u64) -> i32 {
    // SAFETY: getpriority takes two integers and only reads scheduling state.
    if unsafe { libc::syscall(libc::SYS_getpriority, which, who) } < 0 {
        errno()
    } else {
        0
    }
}

/// getpid(2), as a syscall argument.
fn getpid() -> u64 {
    // SAFETY: getpid takes no arguments and touches no memory.
    let pid = unsafe { libc::getpid() };
    u64::try_from(pid).unwrap_or(0)
}

/// getppid(2); never fails.
fn getppid() -> i32 {
    // SAFETY: getppid takes no arguments and touches no memory.
    unsafe { libc::getppid() };
    0
}

fn rule(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
        .action(action)
        .build()
        .unwrap()
}

fn errno_rule(names: &[&str], errno_ret: u32) -> LinuxSyscall {
    let mut entry = rule(names, LinuxSeccompAction::ScmpActErrno);
    entry.set_errno_ret(Some(errno_ret));
    entry
}

fn with_args(mut entry: LinuxSyscall, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    entry.set_args(Some(args));
    entry
}

fn arg(index: usize, op: LinuxSeccompOperator, value: u64) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value)
        .build()
        .unwrap()
}

fn profile(default: LinuxSeccompAction, syscalls: Vec<LinuxSyscall>) -> LinuxSeccomp {
    LinuxSeccompBuilder::default()
        .default_action(default)
        .syscalls(syscalls)
        .build()
        .unwrap()
}

/// Default `SCMP_ACT_ERRNO` (with `default_errno_ret` if given), allowing
/// `exit_group` so that the child can leave, plus `rules`.
fn deny_by_default(default_errno_ret: Option<u32>, mut rules: Vec<LinuxSyscall>) -> Filter {
    rules.insert(0, rule(&["exit_group"], LinuxSeccompAction::ScmpActAllow));
    let mut seccomp = profile(LinuxSeccompAction::ScmpActErrno, rules);
    seccomp.set_default_errno_ret(default_errno_ret);
    compile(&seccomp).unwrap()
}

fn allow_by_default(rules: Vec<LinuxSyscall>) -> Filter {
    compile(&profile(LinuxSeccompAction::ScmpActAllow, rules)).unwrap()
}

#[test]
fn errno_rule_returns_its_errno_ret() {
    let filter = allow_by_default(vec![errno_rule(&["uname"], 38)]);

    assert_eq!(run(&filter, NNP, uname), Outcome::Exited(38));
}

#[test]
fn errno_rule_leaves_other_syscalls_alone() {
    let filter = allow_by_default(vec![errno_rule(&["uname"], 38)]);

    assert_eq!(run(&filter, NNP, getppid), Outcome::Exited(0));
}

#[test]
fn default_errno_ret_is_returned_for_unlisted_syscalls() {
    let filter = deny_by_default(Some(1), vec![]);

    assert_eq!(run(&filter, NNP, uname), Outcome::Exited(libc::EPERM));
}

#[test]
fn default_errno_ret_other_than_eperm_is_honoured() {
    let filter = deny_by_default(Some(libc::EOPNOTSUPP as u32), vec![]);

    assert_eq!(run(&filter, NNP, uname), Outcome::Exited(libc::EOPNOTSUPP));
}

#[test]
fn absent_default_errno_ret_means_eperm() {
    let filter = deny_by_default(None, vec![]);

    assert_eq!(run(&filter, NNP, uname), Outcome::Exited(libc::EPERM));
}

#[test]
fn allow_list_passes_listed_syscalls() {
    let filter = deny_by_default(
        Some(1),
        vec![rule(&["uname"], LinuxSeccompAction::ScmpActAllow)],
    );

    assert_eq!(run(&filter, NNP, uname), Outcome::Exited(0));
}

#[test]
fn eq_condition_allows_only_the_matching_value() {
    let filter = deny_by_default(
        Some(1),
        vec![with_args(
            rule(&["personality"], LinuxSeccompAction::ScmpActAllow),
            vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, PERSONALITY_QUERY)],
        )],
    );

    assert_eq!(
        run(&filter, NNP, || personality(PERSONALITY_QUERY)),
        Outcome::Exited(0)
    );
    assert_eq!(
        run(&filter, NNP, || personality(PER_LINUX)),
        Outcome::Exited(libc::EPERM)
    );
}

#[test]
fn masked_eq_compares_the_masked_argument_with_value_two() {
    // (arg & (UNAME26 | PER_LINUX32)) == UNAME26: mask and value differ, so
    // swapping them would change the outcome.
    let masked = LinuxSeccompArgBuilder::default()
        .index(0_usize)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .value(UNAME26 | PER_LINUX32)
        .value_two(UNAME26)
        .build()
        .unwrap();
    let filter = allow_by_default(vec![with_args(
        errno_rule(&["personality"], libc::EXDEV as u32),
        vec![masked],
    )]);

    assert_eq!(
        run(&filter, NNP, || personality(UNAME26)),
        Outcome::Exited(libc::EXDEV)
    );
    assert_eq!(
        run(&filter, NNP, || personality(UNAME26 | PER_LINUX32)),
        Outcome::Exited(0)
    );
    assert_eq!(
        run(&filter, NNP, || personality(PER_LINUX)),
        Outcome::Exited(0)
    );
}

#[test]
fn conditions_on_the_same_argument_are_ored() {
    let filter = deny_by_default(
        Some(1),
        vec![with_args(
            rule(&["personality"], LinuxSeccompAction::ScmpActAllow),
            vec![
                arg(0, LinuxSeccompOperator::ScmpCmpEq, PER_LINUX),
                arg(0, LinuxSeccompOperator::ScmpCmpEq, PER_LINUX32),
            ],
        )],
    );

    assert_eq!(
        run(&filter, NNP, || personality(PER_LINUX)),
        Outcome::Exited(0)
    );
    assert_eq!(
        run(&filter, NNP, || personality(PER_LINUX32)),
        Outcome::Exited(0)
    );
    assert_eq!(
        run(&filter, NNP, || personality(UNAME26)),
        Outcome::Exited(libc::EPERM)
    );
}

#[test]
fn conditions_on_different_arguments_are_anded() {
    let prio_process = libc::PRIO_PROCESS as u64;
    let prio_pgrp = libc::PRIO_PGRP as u64;
    let filter = allow_by_default(vec![with_args(
        errno_rule(&["getpriority"], libc::EXDEV as u32),
        vec![
            arg(0, LinuxSeccompOperator::ScmpCmpEq, prio_process),
            arg(1, LinuxSeccompOperator::ScmpCmpEq, 0),
        ],
    )]);

    assert_eq!(
        run(&filter, NNP, || getpriority(prio_process, 0)),
        Outcome::Exited(libc::EXDEV)
    );
    assert_eq!(
        run(&filter, NNP, || getpriority(prio_pgrp, 0)),
        Outcome::Exited(0)
    );
    let own_pid = || getpriority(prio_process, getpid());
    assert_eq!(run(&filter, NNP, own_pid), Outcome::Exited(0));
}

#[test]
fn kill_process_kills_with_sigsys() {
    let filter = allow_by_default(vec![rule(
        &["uname"],
        LinuxSeccompAction::ScmpActKillProcess,
    )]);

    assert_eq!(
        run(&filter, NNP_NO_CORE, uname),
        Outcome::Signaled(libc::SIGSYS)
    );
}

#[test]
fn kill_kills_the_thread_with_sigsys() {
    let filter = allow_by_default(vec![rule(&["uname"], LinuxSeccompAction::ScmpActKill)]);

    assert_eq!(
        run(&filter, NNP_NO_CORE, uname),
        Outcome::Signaled(libc::SIGSYS)
    );
}

#[test]
fn trap_raises_sigsys() {
    let filter = allow_by_default(vec![rule(&["uname"], LinuxSeccompAction::ScmpActTrap)]);

    assert_eq!(
        run(&filter, NNP_NO_CORE, uname),
        Outcome::Signaled(libc::SIGSYS)
    );
}

#[test]
fn trace_without_a_tracer_fails_with_enosys() {
    let filter = allow_by_default(vec![rule(&["uname"], LinuxSeccompAction::ScmpActTrace)]);

    assert_eq!(run(&filter, NNP, uname), Outcome::Exited(libc::ENOSYS));
}

#[test]
fn log_lets_the_syscall_through() {
    let filter = deny_by_default(
        Some(1),
        vec![rule(&["uname"], LinuxSeccompAction::ScmpActLog)],
    );

    assert_eq!(run(&filter, NNP, uname), Outcome::Exited(0));
}

#[test]
fn filter_with_every_supported_arch_still_filters_natively() {
    // Names that exist on one architecture only must not stop the others.
    let mut seccomp = profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![errno_rule(
            &[
                "uname",
                "arm_fadvise64_64",
                "socketcall",
                "arch_prctl",
                "s390_pci_mmio_read",
                "riscv_flush_icache",
                "_llseek",
            ],
            38,
        )],
    );
    let arches = supported_archs()
        .into_iter()
        .map(|n| names::parse_arch(n).unwrap())
        .collect();
    seccomp.set_architectures(Some(arches));
    let filter = compile(&seccomp).unwrap();

    assert_eq!(run(&filter, NNP, uname), Outcome::Exited(38));
}

#[test]
fn supported_flags_load() {
    // WAIT_KILLABLE_RECV only means something with a notify rule.
    let flags: Vec<_> = supported_flags()
        .into_iter()
        .map(|n| names::parse_flag(n).unwrap())
        .filter(|f| *f != LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv)
        .collect();
    let mut seccomp = profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![errno_rule(&["uname"], 38)],
    );
    seccomp.set_flags(Some(flags));
    let filter = compile(&seccomp).unwrap();

    assert_eq!(run(&filter, NNP, uname), Outcome::Exited(38));
}

#[test]
fn load_without_notify_returns_no_fd() {
    let filter = allow_by_default(vec![errno_rule(&["uname"], 38)]);

    let outcome = spawn(
        &filter,
        NNP,
        |fd| if fd.is_none() { 0 } else { CHILD_WRONG_FD },
    )
    .wait();

    assert_eq!(outcome, Outcome::Exited(0));
}

/// Bit number of CAP_SYS_ADMIN in the capability sets (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process has CAP_SYS_ADMIN in its effective set.
fn has_cap_sys_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap();
    let bits = u64::from_str_radix(cap_eff.trim(), 16).unwrap();
    bits & (1 << CAP_SYS_ADMIN) != 0
}

#[test]
fn load_without_no_new_privs_needs_cap_sys_admin_and_leaves_the_bit_unset() {
    let filter = allow_by_default(vec![errno_rule(&["uname"], 38)]);
    let no_nnp = Setup {
        no_new_privs: false,
        dumpable: true,
    };

    let outcome = spawn(&filter, no_nnp, |_| {
        // SAFETY: PR_GET_NO_NEW_PRIVS takes plain integers and only reads.
        let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
        if nnp != 0 {
            return CHILD_SETUP_FAILED;
        }
        uname()
    })
    .wait();

    if has_cap_sys_admin() {
        assert_eq!(outcome, Outcome::Exited(38));
    } else {
        // The kernel refuses (EACCES) and `load` must say so, not succeed.
        assert_eq!(outcome, Outcome::Exited(CHILD_LOAD_FAILED));
    }
}

#[test]
fn load_error_carries_the_kernel_errno() {
    // Only meaningful where the kernel refuses: without CAP_SYS_ADMIN and
    // without no_new_privs. With the capability, the same call succeeds.
    let filter = allow_by_default(vec![]);
    let expected = if has_cap_sys_admin() { 0 } else { libc::EACCES };

    let child = {
        // SAFETY: fork has no memory-safety preconditions; the child only
        // calls `Filter::load` (one seccomp(2) call) and `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = match filter.load() {
                Ok(_) => 0,
                Err(berth_seccomp::SeccompError::Load { source }) => {
                    source.raw_os_error().unwrap_or(CHILD_NO_ERRNO)
                }
                Err(_) => CHILD_LOAD_FAILED,
            };
            // SAFETY: see `spawn`.
            unsafe { libc::_exit(code) }
        }
        Child { pid, reaped: false }
    };

    assert_eq!(child.wait(), Outcome::Exited(expected));
}

/// Creates a pipe, both ends close-on-exec.
fn pipe() -> (File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: pipe2 has just returned these descriptors; nothing else owns them.
    unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Duplicates descriptor `fd` of process `pid` into this process.
fn steal_fd(pid: libc::pid_t, fd: RawFd) -> OwnedFd {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(pidfd >= 0, "pidfd_open: {}", io::Error::last_os_error());
    // SAFETY: pidfd_open has just returned this descriptor; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number and flags, and
    // returns a new descriptor.
    let stolen = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    assert!(stolen >= 0, "pidfd_getfd: {}", io::Error::last_os_error());
    // SAFETY: pidfd_getfd has just returned this descriptor; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(stolen as RawFd) }
}

/// Waits until `fd` is readable, at most `timeout`.
fn wait_readable(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap();
    // SAFETY: `pfd` is one valid pollfd that outlives the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, millis) };
    rc == 1 && pfd.revents & libc::POLLIN != 0
}

#[test]
fn notify_hands_the_syscall_to_the_listener() {
    let mut seccomp = profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![rule(&["uname"], LinuxSeccompAction::ScmpActNotify)],
    );
    seccomp.set_listener_path(Some("/run/berth-test/agent.sock".into()));
    let filter = compile(&seccomp).unwrap();
    assert!(filter.uses_notify());
    let (mut from_child, to_parent) = pipe();
    let to_parent_raw = to_parent.as_raw_fd();

    // The child sends the number of its notify fd, then makes the notified
    // syscall and blocks until the parent answers.
    let child = spawn(&filter, NNP, move |fd| {
        let Some(fd) = fd else { return CHILD_WRONG_FD };
        let number = fd.as_raw_fd();
        // SAFETY: writes the 4 bytes of `number`, which outlives the call.
        let written = unsafe {
            libc::write(
                to_parent_raw,
                (&number as *const RawFd).cast(),
                size_of::<RawFd>(),
            )
        };
        if written != size_of::<RawFd>() as isize {
            return CHILD_PIPE_FAILED;
        }
        let result = uname();
        drop(fd);
        result
    });
    drop(to_parent);
    let mut number = [0; size_of::<RawFd>()];
    from_child
        .read_exact(&mut number)
        .expect("child died before sending its notify fd");
    let notify_fd = steal_fd(child.pid, RawFd::from_ne_bytes(number));

    assert!(
        wait_readable(&notify_fd, Duration::from_secs(10)),
        "no notification within 10s"
    );
    let req = ScmpNotifReq::receive(notify_fd.as_raw_fd()).unwrap();
    assert_eq!(req.data.syscall, ScmpSyscall::from_name("uname").unwrap());
    assert_eq!(req.pid, u32::try_from(child.pid).unwrap());
    ScmpNotifResp::new_error(req.id, -libc::EXDEV, ScmpNotifRespFlags::empty())
        .respond(notify_fd.as_raw_fd())
        .unwrap();

    assert_eq!(child.wait(), Outcome::Exited(libc::EXDEV));
}

/// close_range(2) on fds nobody has: 0 where the kernel has it, else the errno.
fn close_range() -> i32 {
    // SAFETY: close_range on a range of descriptor numbers this process does not use
    // touches no memory and closes nothing.
    if unsafe { libc::syscall(libc::SYS_close_range, 1_000_000u32, 1_000_001u32, 0u32) } < 0 {
        errno()
    } else {
        0
    }
}

#[test]
fn syscalls_newer_than_the_profile_get_enosys() {
    // The newest call the profile names is statx (332 on x86_64): close_range (436)
    // is newer, uname (63) is not.
    let filter = deny_by_default(
        None,
        vec![rule(&["statx"], LinuxSeccompAction::ScmpActAllow)],
    );

    assert_eq!(
        run(&filter, NNP, close_range),
        Outcome::Exited(libc::ENOSYS)
    );
    assert_eq!(run(&filter, NNP, uname), Outcome::Exited(libc::EPERM));
}

#[test]
fn a_profile_that_names_a_newer_call_decides_it_itself() {
    let filter = deny_by_default(
        None,
        vec![rule(&["close_range"], LinuxSeccompAction::ScmpActErrno)],
    );

    assert_eq!(run(&filter, NNP, close_range), Outcome::Exited(libc::EPERM));
}

#[test]
fn an_allow_by_default_profile_lets_newer_calls_run() {
    let filter = allow_by_default(vec![errno_rule(&["uname"], 38)]);

    assert_eq!(run(&filter, NNP, close_range), Outcome::Exited(0));
}
