//! A reader that refuses oversized tar extension headers before the `tar` crate reads them.
//!
//! The `tar` crate reads a GNU long name (`L`), a GNU long link target (`K`) and a PAX
//! extended header (`x`) whole into memory (`EntryFields::read_all`) before it hands out
//! the entry they describe, whatever size their header claims. A hostile layer or archive
//! claiming gigabytes for one of them would make the reader buffer gigabytes. [`Bounded`]
//! sits between the (decompressed) stream and `tar::Archive` and follows the archive's
//! structure as the crate does: it reads each 512-byte header with the crate's own
//! [`tar::Header`] parsing, knows where the next header starts (the data rounded up to a
//! block, PAX `size` records applied to the entry they describe, GNU sparse extension
//! blocks), and fails the read that completes an extension header whose size is over its
//! bound, so its data is never read. The bounds are far above what real archives hold:
//! 64 KiB for a long name or link target (PATH_MAX is 4 KiB) and 1 MiB for PAX records
//! (xattrs included).
//!
//! Where the crate would stop (an all-zero block ends the archive; a header it cannot
//! parse is an error it reports itself), this reader stops following and passes the rest
//! through untouched.

use std::fmt;
use std::io::{self, Read};

/// The most a GNU long name or long link target may claim.
pub const MAX_LONG_NAME: u64 = 64 << 10;
/// The most a PAX extended header (local or global) may claim.
pub const MAX_PAX: u64 = 1 << 20;

const BLOCK: usize = 512;

/// An extension header over its bound; carried inside the `io::Error` the read fails with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTooLarge {
    /// "a GNU long name", "a GNU long link target", "a PAX extended header".
    pub what: &'static str,
    pub size: u64,
    pub limit: u64,
}

impl fmt::Display for HeaderTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} bytes, over the {}-byte limit",
            self.what, self.size, self.limit
        )
    }
}

impl std::error::Error for HeaderTooLarge {}

impl HeaderTooLarge {
    /// The bound an `io::Error` from [`Bounded`] carries, if that is what it is.
    pub fn find(e: &io::Error) -> Option<&HeaderTooLarge> {
        e.get_ref()?.downcast_ref::<HeaderTooLarge>()
    }
}

enum State {
    /// Collecting a header block (`fill` bytes of it so far).
    Header,
    /// Collecting GNU sparse extension blocks; `data` bytes of entry data follow them.
    Sparse { data: u64 },
    /// Inside an entry's data and padding: `left` bytes to go. `pax`: the entry is PAX
    /// records, kept (bounded) to find a `size` record.
    Data { left: u64, pax: Option<Vec<u8>> },
    /// Past the end of the archive, or where the crate will fail anyway.
    Off,
}

/// See the module documentation.
pub struct Bounded<R> {
    inner: R,
    state: State,
    block: [u8; BLOCK],
    fill: usize,
    /// The `size` of the last PAX header, for the entry it describes.
    pax_size: Option<u64>,
    /// The data size of the PAX entry being read (its padding is not kept).
    pax_len: u64,
}

impl<R: Read> Bounded<R> {
    pub fn new(inner: R) -> Self {
        Bounded {
            inner,
            state: State::Header,
            block: [0; BLOCK],
            fill: 0,
            pax_size: None,
            pax_len: 0,
        }
    }

    /// Follows `data`, which the inner reader just gave.
    fn follow(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return Ok(()),
                State::Header | State::Sparse { .. } => {
                    let n = (BLOCK - self.fill).min(data.len());
                    self.block[self.fill..self.fill + n].copy_from_slice(&data[..n]);
                    self.fill += n;
                    data = &data[n..];
                    if self.fill == BLOCK {
                        self.fill = 0;
                        self.block_done()?;
                    }
                }
                State::Data { left, pax } => {
                    let n = (*left).min(data.len() as u64) as usize;
                    if let Some(buf) = pax {
                        let keep = (self.pax_len as usize).saturating_sub(buf.len()).min(n);
                        buf.extend_from_slice(&data[..keep]);
                    }
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        if let State::Data { pax: Some(buf), .. } =
                            std::mem::replace(&mut self.state, State::Header)
                        {
                            self.pax_size = pax_size(&buf);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A whole block arrived in `State::Header` or `State::Sparse`.
    fn block_done(&mut self) -> io::Result<()> {
        if let State::Sparse { data } = self.state {
            // A GNU sparse extension block: 21 sparse records of 24 bytes, then
            // `isextended` at offset 504, which the crate reads as "== 1".
            if self.block[504] == 1 {
                return Ok(());
            }
            self.state = data_state(data, None);
            return Ok(());
        }
        if self.block.iter().all(|b| *b == 0) {
            // The crate ends the archive here.
            self.state = State::Off;
            return Ok(());
        }
        let h = tar::Header::from_byte_slice(&self.block);
        let Ok(size) = h.entry_size() else {
            // The crate fails on this header itself.
            self.state = State::Off;
            return Ok(());
        };
        let t = h.entry_type();
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        let extension = t.is_gnu_longname()
            || t.is_gnu_longlink()
            || t.is_pax_local_extensions()
            || t.is_pax_global_extensions();
        let bound = if t.is_gnu_longname() {
            Some(("a GNU long name", MAX_LONG_NAME))
        } else if t.is_gnu_longlink() {
            Some(("a GNU long link target", MAX_LONG_NAME))
        } else if t.is_pax_local_extensions() || t.is_pax_global_extensions() {
            Some(("a PAX extended header", MAX_PAX))
        } else {
            None
        };
        if let Some((what, limit)) = bound {
            if size > limit {
                self.state = State::Off;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    HeaderTooLarge { what, size, limit },
                ));
            }
        }
        // A PAX `size` replaces the header's for the entry it describes, not for the
        // extension headers between (the crate's rule); an entry the crate hands out ends
        // the PAX header's reach.
        let data = if extension {
            size
        } else {
            self.pax_size.unwrap_or(size)
        };
        let consumed = recognized
            && (t.is_gnu_longname() || t.is_gnu_longlink() || t.is_pax_local_extensions());
        if !consumed {
            self.pax_size = None;
        }
        let pax = (recognized && t.is_pax_local_extensions()).then(Vec::new);
        if pax.is_some() {
            // These records replace any before (the crate refuses two in a row anyway).
            self.pax_size = None;
            self.pax_len = size;
        }
        if t.is_gnu_sparse() && h.as_gnu().is_some_and(|g| g.is_extended()) {
            self.state = State::Sparse { data };
            return Ok(());
        }
        self.state = data_state(data, pax);
        Ok(())
    }
}

/// The state for `size` bytes of data, padded to a block; `Off` on an overflow (which the
/// crate refuses itself).
fn data_state(size: u64, pax: Option<Vec<u8>>) -> State {
    match size.checked_add(BLOCK as u64 - 1) {
        Some(s) => {
            let left = s & !(BLOCK as u64 - 1);
            if left == 0 {
                State::Header
            } else {
                State::Data { left, pax }
            }
        }
        None => State::Off,
    }
}

/// The `size` record of PAX records, as the crate reads it (the first malformed record
/// ends the search).
fn pax_size(records: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(records) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse().ok();
    }
    None
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.follow(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
