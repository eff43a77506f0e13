//! Children with a bounded address space (RLIMIT_AS).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Makes `cmd` start with its address space limited to `limit` bytes (RLIMIT_AS, soft and
/// hard) and with one malloc arena: glibc reserves 64 MiB of address space per arena, which
/// a bound of a few hundred MiB would otherwise spend on threads. A child that tries to
/// buffer an endless or oversized input dies of the bound (an allocation failure, an abort)
/// or fails cleanly.
pub fn limit_address_space(cmd: &mut Command, limit: u64) -> &mut Command {
    cmd.env("MALLOC_ARENA_MAX", "1");
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed. It makes one, setrlimit(2), on an rlimit on its own stack, and on
    // failure reads errno; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// How a re-run test child ended.
#[derive(Debug)]
pub enum Rerun {
    /// It exited (or was killed by a signal: `code` None) with this stdout.
    Done { code: Option<i32>, stdout: String },
    /// It was still running at the deadline and was killed.
    Hung,
}

/// Runs the test `name` of the calling test binary again, alone, in a child whose address
/// space is limited to `limit` bytes ([`limit_address_space`]) and with `env` set, killed
/// after `deadline`. The test tells it is the child by one of the `env` variables, does its
/// work there and prints its result after `RESULT: ` ([`result_line`]). The child's stderr
/// is the caller's.
pub fn rerun_limited(name: &str, env: &[(&str, &str)], limit: u64, deadline: Duration) -> Rerun {
    let mut c = Command::new(std::env::current_exe().unwrap());
    limit_address_space(&mut c, limit)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = c.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + deadline;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Rerun::Done {
                code: st.code(),
                stdout: reader.join().unwrap(),
            };
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return Rerun::Hung;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a re-run child printed as its result: the rest of the line after `RESULT: `
/// (libtest prints the test's name on the same line first).
pub fn result_line(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT: ").map(|(_, r)| r))
}
