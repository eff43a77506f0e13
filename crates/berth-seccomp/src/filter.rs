//! The compiled filter: a BPF program and the seccomp(2) flags to load it
//! with.
//!
//! `compile` runs libseccomp in the parent and keeps only its output, the
//! BPF program. Loading is then a single seccomp(2) call that allocates
//! nothing and takes no lock, so it is safe in a child forked from a
//! multi-threaded parent, and errors such as an oversized program are found
//! before any process exists. It also keeps the notify fd out of libseccomp's
//! process-wide state: it belongs to the caller of [`Filter::load`] alone.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use libseccomp::ScmpFilterContext;

use crate::SeccompError;

/// The kernel's limit on the length of a classic BPF program.
const BPF_MAXINSNS: usize = 4096;

/// Size of one `struct sock_filter` as libseccomp exports it.
const INSN_SIZE: usize = 8;

/// The seccomp(2) flags a filter is loaded with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KernelFlags {
    /// `SECCOMP_FILTER_FLAG_TSYNC`.
    pub(crate) tsync: bool,
    /// `SECCOMP_FILTER_FLAG_LOG`.
    pub(crate) log: bool,
    /// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`.
    pub(crate) spec_allow: bool,
    /// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`; only meaningful with a listener.
    pub(crate) wait_killable_recv: bool,
    /// `SECCOMP_FILTER_FLAG_NEW_LISTENER`: some rule uses `SCMP_ACT_NOTIFY`.
    pub(crate) new_listener: bool,
}

impl KernelFlags {
    /// The flags argument of seccomp(2), combined as libseccomp combines them.
    fn bits(self) -> libc::c_ulong {
        let mut bits = 0;
        if self.tsync {
            bits |= libc::SECCOMP_FILTER_FLAG_TSYNC;
            // Without TSYNC_ESRCH the kernel refuses TSYNC with NEW_LISTENER,
            // because both would report through the return value.
            if self.new_listener {
                bits |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
            }
        }
        if self.log {
            bits |= libc::SECCOMP_FILTER_FLAG_LOG;
        }
        if self.spec_allow {
            bits |= libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
        }
        if self.new_listener {
            bits |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
            // The kernel accepts WAIT_KILLABLE_RECV only with a listener;
            // libseccomp drops it otherwise, and so do we.
            if self.wait_killable_recv {
                bits |= libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
            }
        }
        bits
    }
}

/// A compiled seccomp filter, ready to be loaded.
///
/// It is plain data (no libseccomp context, no pointers), so it survives
/// `fork()`, and it is `Send` and `Sync`.
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: KernelFlags,
}

impl Filter {
    pub(crate) fn new(program: Vec<libc::sock_filter>, flags: KernelFlags) -> Self {
        Self { program, flags }
    }

    /// Loads the filter into the calling thread (and, with
    /// `SECCOMP_FILTER_FLAG_TSYNC`, every thread of the process).
    ///
    /// Returns the notify fd (close-on-exec) when some rule uses
    /// `SCMP_ACT_NOTIFY`; the caller owns it and must hand it to the agent at
    /// `listenerPath`. Does not set `no_new_privs`: the caller either sets it
    /// first (`process.noNewPrivileges`) or has `CAP_SYS_ADMIN`, otherwise
    /// this fails with `EACCES`.
    ///
    /// One seccomp(2) call: no allocation and no lock, on success or error,
    /// so it may run in a child forked from a multi-threaded process. Each
    /// call stacks one more filter.
    pub fn load(&self) -> Result<Option<OwnedFd>, SeccompError> {
        let prog = libc::sock_fprog {
            // `Filter::new` is only reached through `export`, which keeps
            // the program within BPF_MAXINSNS (4096), so this cannot clamp.
            len: libc::c_ushort::try_from(self.program.len()).unwrap_or(libc::c_ushort::MAX),
            filter: self.program.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `self.program`, `prog.len` initialised instructions alive
        // past the call; seccomp(2) SET_MODE_FILTER (operation, flags, sock_fprog) only copies
        // them, despite the `*mut`, and touches no other memory of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags.bits(),
                &prog as *const libc::sock_fprog,
            )
        };
        if rc < 0 {
            return Err(SeccompError::Load {
                source: io::Error::last_os_error(),
            });
        }
        if self.flags.new_listener {
            let fd = RawFd::try_from(rc).map_err(|_| SeccompError::Load {
                source: io::Error::from(io::ErrorKind::InvalidData),
            })?;
            // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER a non-negative
            // return value is a descriptor the kernel has just installed for
            // us; nothing else refers to it, so taking ownership is sound.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        if rc > 0 {
            // Plain TSYNC reports a thread it could not synchronise this way.
            return Err(SeccompError::TsyncFailed { tid: rc });
        }
        Ok(None)
    }

    /// Whether some rule uses `SCMP_ACT_NOTIFY`, i.e. whether
    /// [`Filter::load`] returns a notify fd.
    pub fn uses_notify(&self) -> bool {
        self.flags.new_listener
    }

    /// Length of the BPF program, in instructions.
    pub fn instruction_count(&self) -> usize {
        self.program.len()
    }

    #[cfg(test)]
    pub(crate) fn kernel_flags(&self) -> KernelFlags {
        self.flags
    }

    /// What the filter decides for `call` (see `eval`).
    #[cfg(test)]
    pub(crate) fn decide(&self, call: &crate::eval::Call) -> u32 {
        crate::eval::run(&self.program, call)
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.program.len())
            .field("flags", &self.flags)
            .finish()
    }
}

/// Generates the BPF program of a libseccomp context.
///
/// libseccomp 2.5 exports only to a file descriptor, so the program goes
/// through a memfd.
pub(crate) fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    // SAFETY: the name is a NUL-terminated literal that lives for the whole
    // call and MFD_CLOEXEC is a valid flag; memfd_create writes no memory of
    // ours and returns a new descriptor or -1.
    let raw = unsafe { libc::memfd_create(c"berth-seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(SeccompError::Export {
            action: "create a memfd",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: memfd_create has just returned this descriptor and nothing
    // else refers to it.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    ctx.export_bpf(&file)
        .map_err(|source| SeccompError::Libseccomp {
            action: "generate the BPF program".to_owned(),
            source,
        })?;
    file.rewind().map_err(|source| SeccompError::Export {
        action: "rewind the memfd",
        source,
    })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| SeccompError::Export {
            action: "read the memfd",
            source,
        })?;
    parse_program(&bytes)
}

/// Splits exported bytes into instructions (native byte order: every
/// architecture of one filter shares the host's).
fn parse_program(bytes: &[u8]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    if bytes.is_empty() || bytes.len() % INSN_SIZE != 0 {
        return Err(SeccompError::Export {
            action: "read whole instructions",
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("libseccomp exported {} bytes", bytes.len()),
            ),
        });
    }
    let program: Vec<_> = bytes
        .chunks_exact(INSN_SIZE)
        .map(|insn| libc::sock_filter {
            code: u16::from_ne_bytes([insn[0], insn[1]]),
            jt: insn[2],
            jf: insn[3],
            k: u32::from_ne_bytes([insn[4], insn[5], insn[6], insn[7]]),
        })
        .collect();
    check_length(&program)?;
    Ok(program)
}

/// Refuses a program longer than the kernel loads.
pub(crate) fn check_length(program: &[libc::sock_filter]) -> Result<(), SeccompError> {
    if program.len() > BPF_MAXINSNS {
        return Err(SeccompError::ProgramTooLong {
            len: program.len(),
            max: BPF_MAXINSNS,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_bytes_are_split_in_native_order() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0x0015_u16.to_ne_bytes());
        bytes.extend_from_slice(&[1, 2]);
        bytes.extend_from_slice(&0xc000_003e_u32.to_ne_bytes());

        let program = parse_program(&bytes).unwrap();

        assert_eq!(program.len(), 1);
        assert_eq!(
            (program[0].code, program[0].jt, program[0].jf, program[0].k),
            (0x15, 1, 2, 0xc000_003e)
        );
    }

    #[test]
    fn partial_instruction_is_rejected() {
        assert!(matches!(
            parse_program(&[0; 12]),
            Err(SeccompError::Export { .. })
        ));
    }

    #[test]
    fn program_beyond_the_kernel_limit_is_rejected() {
        let bytes = vec![0; (BPF_MAXINSNS + 1) * INSN_SIZE];

        assert!(matches!(
            parse_program(&bytes),
            Err(SeccompError::ProgramTooLong { len, max }) if len == BPF_MAXINSNS + 1 && max == BPF_MAXINSNS
        ));
    }

    #[test]
    fn flags_combine_like_libseccomp() {
        let notify_tsync = KernelFlags {
            tsync: true,
            new_listener: true,
            wait_killable_recv: true,
            ..Default::default()
        };
        let tsync_only = KernelFlags {
            tsync: true,
            wait_killable_recv: true,
            ..Default::default()
        };

        assert_eq!(
            notify_tsync.bits(),
            libc::SECCOMP_FILTER_FLAG_TSYNC
                | libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH
                | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
                | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        );
        assert_eq!(tsync_only.bits(), libc::SECCOMP_FILTER_FLAG_TSYNC);
        assert_eq!(KernelFlags::default().bits(), 0);
    }

    #[test]
    fn filter_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Filter>();
    }
}
