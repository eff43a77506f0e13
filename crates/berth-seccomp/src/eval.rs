//! A classic BPF interpreter for tests: runs a compiled filter over one system call, as
//! the kernel's seccomp does, so that tests check what a filter decides rather than only
//! that it compiled. It takes every instruction seccomp's own checker admits.

use libseccomp::{ScmpArch, ScmpSyscall};

/// One system call as seccomp sees it (`struct seccomp_data`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Call {
    pub nr: u32,
    pub arch: u32,
    pub ip: u64,
    pub args: [u64; 6],
}

impl Call {
    /// `name` on the host's architecture, with `args`.
    pub(crate) fn native(name: &str, args: &[u64]) -> Call {
        let nr = ScmpSyscall::from_name(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .as_raw_syscall();
        let mut call = Call::number(u32::try_from(nr).expect("a real syscall"));
        call.args[..args.len()].copy_from_slice(args);
        call
    }

    /// System call number `nr` on the host's architecture.
    pub(crate) fn number(nr: u32) -> Call {
        Call {
            nr,
            arch: crate::enosys::audit_arch(ScmpArch::native()).expect("a known host"),
            ..Call::default()
        }
    }

    /// The 32-bit word at `offset` of `struct seccomp_data`, host byte order.
    fn word(&self, offset: u32) -> u32 {
        let half = |v: u64, hi: bool| if hi { (v >> 32) as u32 } else { v as u32 };
        // Little-endian layout: the low half of a 64-bit field comes first.
        let hi = cfg!(target_endian = "big");
        match offset {
            0 => self.nr,
            4 => self.arch,
            8 => half(self.ip, hi),
            12 => half(self.ip, !hi),
            o if (16..64).contains(&o) && o % 4 == 0 => {
                let arg = self.args[((o - 16) / 8) as usize];
                half(arg, if (o - 16) % 8 == 0 { hi } else { !hi })
            }
            o => panic!("load of offset {o} past seccomp_data"),
        }
    }
}

/// Runs `program` over `call` and returns the filter's verdict (`SECCOMP_RET_*` | data).
pub(crate) fn run(program: &[libc::sock_filter], call: &Call) -> u32 {
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    loop {
        let i = *program.get(pc).expect("the program ran off its end");
        pc += 1;
        let code = u32::from(i.code);
        let src = if code & 0x08 != 0 { x } else { i.k };
        match code & 0x07 {
            0x00 => match code & 0xe0 {
                0x20 => a = call.word(i.k),                                   // ld [k]
                0x00 => a = i.k,                                              // ld #k
                0x60 => a = mem[i.k as usize],                                // ld M[k]
                0x80 => a = std::mem::size_of::<libc::seccomp_data>() as u32, // ld len
                m => panic!("ld mode {m:#x}"),
            },
            0x01 => match code & 0xe0 {
                0x00 => x = i.k,
                0x60 => x = mem[i.k as usize],
                0x80 => x = std::mem::size_of::<libc::seccomp_data>() as u32,
                m => panic!("ldx mode {m:#x}"),
            },
            0x02 => mem[i.k as usize] = a,
            0x03 => mem[i.k as usize] = x,
            0x04 => {
                a = match code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 => a / src,
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.wrapping_shl(src),
                    0x70 => a.wrapping_shr(src),
                    0x80 => a.wrapping_neg(),
                    0x90 => a % src,
                    0xa0 => a ^ src,
                    op => panic!("alu op {op:#x}"),
                }
            }
            0x05 => {
                let taken = match code & 0xf0 {
                    0x00 => {
                        pc += i.k as usize;
                        continue;
                    }
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    op => panic!("jmp op {op:#x}"),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            0x06 => return if code & 0x18 == 0x10 { a } else { i.k },
            _ => {
                if code & 0xf8 == 0x00 {
                    x = a; // tax
                } else {
                    a = x; // txa
                }
            }
        }
    }
}

pub(crate) const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

pub(crate) fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}
