//! Container output in the CRI log format, written by the shim itself so that a stopped
//! engine never blocks a container's output.
//!
//! One entry per line: `<RFC 3339 time, nanoseconds> <stream> <tag> <content>\n`, where the
//! stream is `stdout` or `stderr` and the tag `F` (a full line) or `P` (part of a line that
//! goes on in the next entry). A line longer than [`MAX_LINE`] is cut into `P` entries and a
//! last `F`; output that ends without a newline is written `F` when its stream closes.
//! The kubelet rotates logs by renaming the file and asking for a reopen: [`LogFile::reopen`]
//! opens the path again, and nothing buffered is lost across it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The longest content of one entry (the kubelet's and containerd's 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// Which stream an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Cuts one stream's bytes into log entries; holds an unfinished line until its newline, its
/// stream's end, or [`MAX_LINE`] bytes.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

/// One entry to write: stream, full or partial, content (without the newline).
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub stream: Stream,
    pub partial: bool,
    pub content: &'a [u8],
}

impl LineSplitter {
    pub fn new(stream: Stream) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    /// Feeds bytes read from the stream; `emit` gets each entry that is complete.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut dyn FnMut(Entry<'_>)) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let (line, rest) = (&data[..i], &data[i + 1..]);
                    if self.pending.is_empty() {
                        self.emit_line(line, emit);
                    } else {
                        let mut whole = std::mem::take(&mut self.pending);
                        whole.extend_from_slice(line);
                        self.emit_line(&whole, emit);
                    }
                    data = rest;
                }
                None => {
                    self.pending.extend_from_slice(data);
                    data = &[];
                    while self.pending.len() >= MAX_LINE {
                        let rest = self.pending.split_off(MAX_LINE);
                        let chunk = std::mem::replace(&mut self.pending, rest);
                        emit(Entry {
                            stream: self.stream,
                            partial: true,
                            content: &chunk,
                        });
                    }
                }
            }
        }
    }

    /// The stream ended: what is left is written as a full line.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Entry<'_>)) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit_line(&rest, emit);
        }
    }

    /// A whole line: `P` chunks of MAX_LINE, then the last piece `F`.
    fn emit_line(&self, line: &[u8], emit: &mut dyn FnMut(Entry<'_>)) {
        let mut chunks = line.chunks(MAX_LINE).peekable();
        if chunks.peek().is_none() {
            emit(Entry {
                stream: self.stream,
                partial: false,
                content: &[],
            });
            return;
        }
        while let Some(c) = chunks.next() {
            emit(Entry {
                stream: self.stream,
                partial: chunks.peek().is_some(),
                content: c,
            });
        }
    }
}

/// Formats one entry with the time `now` (RFC 3339 with nanoseconds).
pub fn format_entry(now: &str, e: &Entry<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(now.as_bytes());
    out.push(b' ');
    out.extend_from_slice(e.stream.name().as_bytes());
    out.extend_from_slice(if e.partial { b" P " } else { b" F " });
    out.extend_from_slice(e.content);
    out.push(b'\n');
}

/// The current time as the log wants it.
pub fn now() -> String {
    libberth::state::now_rfc3339()
}

/// A container's log file, at the path the kubelet chose.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
}

impl LogFile {
    /// Opens (creating, appending) the log at `path`; its directory must exist.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: open_log(path)?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes formatted entries.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)
    }

    /// Opens the path again: after the kubelet renamed the file, new entries go to a new one.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open_log(&self.path)?;
        Ok(())
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(s: &mut LineSplitter, input: &[&[u8]], finish: bool) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        for chunk in input {
            s.feed(chunk, &mut |e| out.push((e.partial, e.content.to_vec())));
        }
        if finish {
            s.finish(&mut |e| out.push((e.partial, e.content.to_vec())));
        }
        out
    }

    #[test]
    fn whole_lines_are_full_entries_and_split_reads_join() {
        let mut s = LineSplitter::new(Stream::Stdout);

        let got = entries(&mut s, &[b"one\ntw", b"o\n", b"\nthree"], false);

        assert_eq!(
            got,
            [
                (false, b"one".to_vec()),
                (false, b"two".to_vec()),
                (false, b"".to_vec())
            ]
        );
        let rest = entries(&mut s, &[], true);
        assert_eq!(rest, [(false, b"three".to_vec())]);
    }

    #[test]
    fn a_long_line_is_cut_into_partial_entries_and_a_full_one() {
        let mut s = LineSplitter::new(Stream::Stderr);
        let mut line = vec![b'x'; 2 * MAX_LINE + 10];
        line.push(b'\n');

        let got = entries(&mut s, &[&line[..100], &line[100..]], false);

        let shape: Vec<(bool, usize)> = got.iter().map(|(p, c)| (*p, c.len())).collect();
        assert_eq!(shape, [(true, MAX_LINE), (true, MAX_LINE), (false, 10)]);
    }

    #[test]
    fn output_without_a_newline_waits_for_the_end_of_its_stream() {
        let mut s = LineSplitter::new(Stream::Stdout);

        assert!(entries(&mut s, &[b"no newline"], false).is_empty());
        assert_eq!(
            entries(&mut s, &[], true),
            [(false, b"no newline".to_vec())]
        );
    }

    #[test]
    fn entries_are_formatted_as_the_kubelet_reads_them() {
        let mut out = Vec::new();
        let e = Entry {
            stream: Stream::Stderr,
            partial: true,
            content: b"half",
        };

        format_entry("2026-12-07T20:00:00.000000001Z", &e, &mut out);

        assert_eq!(out, b"2026-12-07T20:00:00.000000001Z stderr P half\n");
    }

    #[test]
    fn reopen_after_a_rename_starts_a_new_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        let mut f = LogFile::open(&p).unwrap();
        f.write(b"first\n").unwrap();
        std::fs::rename(&p, d.path().join("0.log.1")).unwrap();

        f.reopen().unwrap();
        f.write(b"second\n").unwrap();

        assert_eq!(std::fs::read(d.path().join("0.log.1")).unwrap(), b"first\n");
        assert_eq!(std::fs::read(&p).unwrap(), b"second\n");
    }
}
