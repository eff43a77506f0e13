//! Reading how a guest ended from the end of its console log.
//!
//! The console is written by the guest, which is hostile: it can print any bytes, in any
//! amount, at any time, including a fake panic line. So only a bounded tail is read, nothing
//! in it is trusted beyond "this is what the guest said", and what is passed on is printable
//! and bounded. The last kernel event in the tail decides.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::{VmExit, PANIC_LINE_MAX};

/// How much of the console's end is read: the panic line is followed by at most a stack
/// trace and the `---[ end Kernel panic ...` line, a few KiB.
pub(crate) const TAIL_BYTES: u64 = 64 * 1024;

const PANIC: &[u8] = b"Kernel panic - not syncing";
const POWER_DOWN: &[u8] = b"reboot: Power down";
const RESTART: &[u8] = b"reboot: Restarting system";

/// The most the console log file takes: the guest writes it, and could otherwise fill the
/// host's disk. What comes after is dropped from the file (its end is still kept in memory
/// for the exit report).
pub const LOG_MAX: u64 = 1 << 20;

const CUT_NOTE: &[u8] =
    b"\n[berth-vm: the console log is cut at 1 MiB here; the guest's further output is dropped]\n";

/// Copies what the VMM writes to the guest's serial console (a pipe) into the log file, up
/// to [`LOG_MAX`], and keeps the last [`TAIL_BYTES`] in memory, for [`guest_exit`].
pub(crate) struct Drain {
    tail: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Drain {
    pub(crate) fn start(pipe: OwnedFd, log: File) -> io::Result<Drain> {
        let tail = Arc::new(Mutex::new(Vec::new()));
        let t = Arc::clone(&tail);
        let thread = std::thread::Builder::new()
            .name("berth-vm-console".into())
            .spawn(move || drain(File::from(pipe), log, &t, LOG_MAX))?;
        Ok(Drain {
            tail,
            thread: Some(thread),
        })
    }

    /// Waits for the pipe's end (the VMM has exited) and returns the console's tail.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.tail.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn drain(mut pipe: File, mut log: File, tail: &Mutex<Vec<u8>>, max: u64) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut written = 0u64;
    let mut cut = false;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if written < max {
            let k = (n as u64).min(max - written) as usize;
            // A log that cannot be written loses lines, not the VM.
            let _ = log.write_all(&buf[..k]);
            written += k as u64;
        }
        if written >= max && !cut {
            let _ = log.write_all(CUT_NOTE);
            cut = true;
        }
        let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
        t.extend_from_slice(&buf[..n]);
        let keep = TAIL_BYTES as usize;
        if t.len() > 2 * keep {
            let cut_at = t.len() - keep;
            t.drain(..cut_at);
        }
    }
}

/// What a guest whose VMM exited with status 0 said last: a panic, a power-off, or
/// otherwise a reset (a reboot request, or a triple fault that prints nothing).
pub(crate) fn guest_exit(tail: &[u8]) -> VmExit {
    let last = |needle: &[u8]| rfind(tail, needle);
    let panic = last(PANIC);
    let down = last(POWER_DOWN);
    let restart = last(RESTART);
    let latest = [panic, down, restart].into_iter().flatten().max();
    match latest {
        None => VmExit::Reset,
        Some(at) if Some(at) == panic => VmExit::Panic {
            line: panic_line(tail, first_panic(tail, at)),
        },
        Some(at) if Some(at) == down => VmExit::Poweroff,
        Some(_) => VmExit::Reset,
    }
}

/// The panic that the one at `last` ends: the kernel prints `Kernel panic - not syncing: X`,
/// a trace, then `---[ end Kernel panic - not syncing: X ]---`. The first line of that panic
/// is the one to report; a guest that prints several panics gets its last one reported.
fn first_panic(tail: &[u8], last: usize) -> usize {
    let end_marker = b"---[ end ";
    let is_end_line =
        last >= end_marker.len() && &tail[last - end_marker.len()..last] == end_marker;
    if !is_end_line {
        return last;
    }
    rfind(&tail[..last - end_marker.len()], PANIC).unwrap_or(last)
}

/// The line at `at`, up to its end or [`PANIC_LINE_MAX`] bytes, printable.
fn panic_line(tail: &[u8], at: usize) -> String {
    let rest = &tail[at..];
    let end = rest
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(rest.len());
    let line = &rest[..end];
    let line = line.strip_suffix(b" ]---").unwrap_or(line);
    printable(line, PANIC_LINE_MAX)
}

/// `bytes` as text a terminal or log shows as it is: ASCII graphic characters and spaces,
/// anything else escaped, at most `max` bytes of output.
pub(crate) fn printable(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for &b in bytes {
        let piece: String = if b == b' ' || b.is_ascii_graphic() {
            (b as char).to_string()
        } else {
            b.escape_ascii().to_string()
        };
        if out.len() + piece.len() > max {
            break;
        }
        out.push_str(&piece);
    }
    out
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_capped_and_the_tail_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let log = File::create(&path).unwrap();
        let (rd, wr) = nix::unistd::pipe().unwrap();
        let mut drain = Drain::start(rd, log).unwrap();
        let mut w = File::from(wr);
        let line = [b'x'; 1023];
        for _ in 0..3 * 1024 {
            w.write_all(&line).unwrap();
            w.write_all(b"\n").unwrap();
        }
        w.write_all(b"[    9.9] Kernel panic - not syncing: the end\n")
            .unwrap();
        drop(w);
        let tail = drain.finish();
        let file = std::fs::read(&path).unwrap();
        assert_eq!(file.len() as u64, LOG_MAX + CUT_NOTE.len() as u64);
        assert!(file.ends_with(CUT_NOTE));
        assert!(tail.len() as u64 >= TAIL_BYTES);
        assert_eq!(
            guest_exit(&tail),
            VmExit::Panic {
                line: "Kernel panic - not syncing: the end".into()
            }
        );
    }

    #[test]
    fn a_power_down_is_a_poweroff() {
        let log = b"[    2.5] ACPI: PM: Preparing to enter system sleep state S5\n\
                    [    2.5] reboot: Power down\n";
        assert_eq!(guest_exit(log), VmExit::Poweroff);
    }

    #[test]
    fn a_panic_reports_its_first_line() {
        let log = b"berth-test: exiting\n\
            [    1.9] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300\n\
            [    1.9] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-57-cloud-amd64 #1\n\
            [    1.9] Call Trace:\n\
            [    1.9] ---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300 ]---\n";
        assert_eq!(
            guest_exit(log),
            VmExit::Panic {
                line: "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300"
                    .into()
            }
        );
    }

    #[test]
    fn the_end_line_alone_still_names_the_panic() {
        let log = b"...trace cut by the tail...\n---[ end Kernel panic - not syncing: VFS ]---\n";
        assert_eq!(
            guest_exit(log),
            VmExit::Panic {
                line: "Kernel panic - not syncing: VFS".into()
            }
        );
    }

    #[test]
    fn the_last_kernel_event_decides() {
        // A guest that prints a fake panic and then powers off powered off.
        let log = b"Kernel panic - not syncing: fake\nreboot: Power down\n";
        assert_eq!(guest_exit(log), VmExit::Poweroff);
        let log = b"reboot: Power down\nKernel panic - not syncing: late\n";
        assert!(matches!(guest_exit(log), VmExit::Panic { .. }));
        assert_eq!(guest_exit(b"reboot: Restarting system\n"), VmExit::Reset);
    }

    #[test]
    fn silence_is_a_reset() {
        assert_eq!(guest_exit(b""), VmExit::Reset);
        assert_eq!(guest_exit(b"SeaBIOS\n"), VmExit::Reset);
    }

    #[test]
    fn a_hostile_panic_line_comes_out_printable_and_bounded() {
        let mut log = b"Kernel panic - not syncing: \x1b[2J\x00\xff".to_vec();
        log.extend(vec![b'A'; 10_000]);
        let VmExit::Panic { line } = guest_exit(&log) else {
            panic!("not a panic")
        };
        assert!(line.len() <= PANIC_LINE_MAX, "{}", line.len());
        assert!(line.contains("\\x1b[2J\\x00\\xff"), "{line}");
        assert!(line.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
    }
}
