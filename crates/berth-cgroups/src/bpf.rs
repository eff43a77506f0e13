//! The `bpf(2)` calls that load a device-filter program and attach it to a cgroup v2
//! directory.
//!
//! Programs are named [`PROGRAM_NAME`]; when rules are applied again, the programs of
//! that name already attached to the cgroup are detached after the new one is attached,
//! so the cgroup is never without a filter.

use std::fs::File;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::devices::BpfInsn;
use crate::error::{CgroupError, Result};

/// The name our device programs carry, so that we can find them again.
pub const PROGRAM_NAME: &str = "berth_devices";

const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_ATTACH: u32 = 8;
const BPF_PROG_DETACH: u32 = 9;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_PROG_QUERY: u32 = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const OBJ_NAME_LEN: usize = 16;
/// Size of the verifier log buffer used when a load fails.
const LOG_SIZE: usize = 256 * 1024;
/// Most programs we expect on one cgroup's device hook.
const MAX_QUERY: usize = 64;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` / `BPF_PROG_DETACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// The `BPF_PROG_QUERY` part of `union bpf_attr`, up to `prog_cnt`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    padding: u32,
}

/// The `BPF_PROG_GET_FD_BY_ID` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The `BPF_OBJ_GET_INFO_BY_FD` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_prog_info`, up to `name`.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; OBJ_NAME_LEN],
}

mod sealed {
    /// Implemented only by the `#[repr(C)]` attribute structs above, which have no
    /// implicit padding, so every byte the kernel reads is initialised.
    pub trait Attr {}
}
impl sealed::Attr for ProgLoadAttr {}
impl sealed::Attr for AttachAttr {}
impl sealed::Attr for QueryAttr {}
impl sealed::Attr for GetFdByIdAttr {}
impl sealed::Attr for InfoByFdAttr {}

/// Calls `bpf(cmd, attr, sizeof(attr))`.
///
/// # Safety
///
/// Every address stored in `attr` (instruction, license, log, id and info buffers) must
/// point to memory that stays valid for the whole call and is as large as the length
/// stored next to it, writable where the command writes.
unsafe fn sys_bpf<T: sealed::Attr>(cmd: u32, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is an exclusively borrowed, initialised, padding-free `#[repr(C)]` struct
    // (`sealed::Attr`) of `size_of::<T>()` bytes, and the kernel stays within that size; the
    // caller vouches for the addresses inside it (see # Safety).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            libc::c_long::from(cmd),
            attr as *mut T,
            size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wraps a file descriptor number the kernel has just returned.
fn owned_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: `fd` was returned by a successful bpf(2) call that creates a new file
    // descriptor; nothing else in this process owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // File descriptors are non-negative.
    fd.as_raw_fd() as u32
}

/// Loads a device program; on failure, loads again with the verifier log on and puts
/// the log in the error.
pub fn load_device_program(insns: &[BpfInsn]) -> Result<OwnedFd> {
    let license = c"Apache";
    let mut name = [0u8; OBJ_NAME_LEN];
    name[..PROGRAM_NAME.len()].copy_from_slice(PROGRAM_NAME.as_bytes());
    let insn_cnt = u32::try_from(insns.len())
        .map_err(|_| CgroupError::DeviceProgramTooLarge { insns: insns.len() })?;
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..ProgLoadAttr::default()
    };
    // SAFETY: `insns` holds `insn_cnt` instructions and `license` is NUL-terminated;
    // both outlive the call. No log buffer is given.
    let first = unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) };
    let first_error = match first.and_then(owned_fd) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    if matches!(first_error.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) {
        return Err(CgroupError::BpfLoad {
            log: String::new(),
            source: first_error,
        });
    }
    let mut log = vec![0u8; LOG_SIZE];
    attr.log_level = 1;
    attr.log_size = LOG_SIZE as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    // SAFETY: as above, and `log` is a writable buffer of `log_size` bytes that
    // outlives the call.
    let second = unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) };
    match second.and_then(owned_fd) {
        // Loading may succeed with the log on if the first failure was transient.
        Ok(fd) => Ok(fd),
        Err(source) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(CgroupError::BpfLoad {
                log: String::from_utf8_lossy(&log[..end]).trim_end().to_string(),
                source,
            })
        }
    }
}

/// Ids of the programs attached to the cgroup's device hook.
fn query(cgroup: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; MAX_QUERY];
    let mut attr = QueryAttr {
        target_fd: fd_u32(cgroup),
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: MAX_QUERY as u32,
        ..QueryAttr::default()
    };
    // SAFETY: `ids` is a writable array of `prog_cnt` u32 that outlives the call.
    unsafe { sys_bpf(BPF_PROG_QUERY, &mut attr) }?;
    let count = (attr.prog_cnt as usize).min(MAX_QUERY);
    Ok(ids[..count].to_vec())
}

/// Opens the program with `id`; `None` if it has gone away meanwhile.
fn program_by_id(id: u32) -> io::Result<Option<OwnedFd>> {
    let mut attr = GetFdByIdAttr {
        prog_id: id,
        ..GetFdByIdAttr::default()
    };
    // SAFETY: this command's attribute holds no addresses.
    match unsafe { sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }.and_then(owned_fd) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The name a loaded program was given.
fn program_name(program: BorrowedFd<'_>) -> io::Result<String> {
    let mut info = ProgInfo::default();
    let mut attr = InfoByFdAttr {
        bpf_fd: fd_u32(program),
        info_len: size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    };
    // SAFETY: `info` is a writable `ProgInfo` of `info_len` bytes that outlives the
    // call; its buffer addresses are zero, so the kernel dumps nothing else.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    let end = info
        .name
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(OBJ_NAME_LEN);
    Ok(String::from_utf8_lossy(&info.name[..end]).into_owned())
}

fn attach_command(command: u32, cgroup: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(program),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: if command == BPF_PROG_ATTACH {
            BPF_F_ALLOW_MULTI
        } else {
            0
        },
        ..AttachAttr::default()
    };
    // SAFETY: this command's attribute holds only file descriptors, no addresses.
    unsafe { sys_bpf(command, &mut attr) }.map(drop)
}

/// Loads `insns` and attaches them to the cgroup directory `dir`, replacing the
/// device programs this crate attached there before.
pub fn install_device_filter(dir: &Path, insns: &[BpfInsn]) -> Result<()> {
    let bpf_error = |command: &'static str| {
        move |source| CgroupError::Bpf {
            command,
            path: dir.to_path_buf(),
            source,
        }
    };
    let cgroup = File::open(dir).map_err(|source| CgroupError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let program = load_device_program(insns)?;

    let mut ours = Vec::new();
    for id in query(cgroup.as_fd()).map_err(bpf_error("BPF_PROG_QUERY"))? {
        let Some(old) = program_by_id(id).map_err(bpf_error("BPF_PROG_GET_FD_BY_ID"))? else {
            continue;
        };
        if program_name(old.as_fd()).map_err(bpf_error("BPF_OBJ_GET_INFO_BY_FD"))? == PROGRAM_NAME {
            ours.push(old);
        }
    }

    attach_command(BPF_PROG_ATTACH, cgroup.as_fd(), program.as_fd())
        .map_err(bpf_error("BPF_PROG_ATTACH"))?;
    for old in ours {
        match attach_command(BPF_PROG_DETACH, cgroup.as_fd(), old.as_fd()) {
            Ok(()) => {}
            // Detached by someone else in the meantime.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(bpf_error("BPF_PROG_DETACH")(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_layouts_match_the_kernel() {
        assert_eq!(size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(size_of::<AttachAttr>(), 20);
        assert_eq!(size_of::<QueryAttr>(), 32);
        assert_eq!(std::mem::offset_of!(QueryAttr, prog_cnt), 24);
        assert_eq!(size_of::<InfoByFdAttr>(), 16);
        assert_eq!(std::mem::offset_of!(ProgInfo, name), 64);
        assert_eq!(size_of::<BpfInsn>(), 8);
    }

    #[test]
    fn program_name_fits_the_kernel_field() {
        assert!(PROGRAM_NAME.len() < OBJ_NAME_LEN);
    }
}
