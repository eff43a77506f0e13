//! Reading how a guest ended from the end of its console log.
//!
//! The console is written by the guest, which is hostile: it can print any bytes, in any
//! amount, at any time, including a fake panic line. So only a bounded tail is read, nothing
//! in it is trusted beyond "this is what the guest said", and what is passed on is printable
//! and bounded. The last kernel event in the tail decides.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::{VmExit, PANIC_LINE_MAX};

/// How much of the console's end is read: the panic line is followed by at most a stack
/// trace and the `---[ end Kernel panic ...` line, a few KiB.
pub(crate) const TAIL_BYTES: u64 = 64 * 1024;

const PANIC: &[u8] = b"Kernel panic - not syncing";
const POWER_DOWN: &[u8] = b"reboot: Power down";
const RESTART: &[u8] = b"reboot: Restarting system";

/// The last `TAIL_BYTES` of the file at `path`.
pub(crate) fn read_tail(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    Ok(buf)
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

    #[test]
    fn the_tail_is_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut data = vec![b'x'; 100];
        data.extend_from_slice(b"END");
        std::fs::write(&path, &data).unwrap();
        assert_eq!(read_tail(&path, 5).unwrap(), b"xxEND");
        assert_eq!(read_tail(&path, 1000).unwrap(), data);
    }
}
