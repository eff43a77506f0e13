//! Helpers for unit tests that must run in a child process.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a re-run test child ended: its exit code (None: killed by a signal, as an abort on
/// a failed allocation is) and stdout; `None` when it was still running at the deadline.
pub fn rerun_limited(
    name: &str,
    env: &[(&str, &str)],
    limit: u64,
    deadline: Duration,
) -> Option<(Option<i32>, String)> {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([name, "--exact", "--nocapture", "--test-threads=1"])
        // One malloc arena: the limit is on address space, and glibc reserves 64 MiB per
        // arena.
        .env("MALLOC_ARENA_MAX", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: between fork and exec the closure only calls setrlimit, which is
    // async-signal-safe, with a struct it owns.
    unsafe {
        c.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
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
            return Some((st.code(), reader.join().unwrap()));
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a re-run child printed after `RESULT: ` (libtest prints the test's name on the
/// same line first).
pub fn result_line(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT: ").map(|(_, r)| r))
}
