use super::*;

fn header(kind: tar::EntryType, name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(size);
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    h
}

fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(512) * 512, 0);
    v
}

/// Fails any read: what comes after an oversized header must never be asked for.
struct NeverRead;

impl Read for NeverRead {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("read past the oversized header"))
    }
}

fn entries_of<R: Read>(r: R) -> io::Result<Vec<String>> {
    let mut a = tar::Archive::new(r);
    let mut out = Vec::new();
    for e in a.entries()? {
        let e = e?;
        out.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
    }
    Ok(out)
}

#[test]
fn oversized_extension_headers_are_refused_before_their_data_is_read() {
    for (kind, what, limit) in [
        (
            tar::EntryType::GNULongName,
            "a GNU long name",
            MAX_LONG_NAME,
        ),
        (
            tar::EntryType::GNULongLink,
            "a GNU long link target",
            MAX_LONG_NAME,
        ),
        (tar::EntryType::XHeader, "a PAX extended header", MAX_PAX),
        (
            tar::EntryType::XGlobalHeader,
            "a PAX extended header",
            MAX_PAX,
        ),
    ] {
        let h = header(kind, "././@LongLink", 4 << 30);
        let e = entries_of(Bounded::new(h.as_bytes().chain(NeverRead))).unwrap_err();
        assert_eq!(
            HeaderTooLarge::find(&e),
            Some(&HeaderTooLarge {
                what,
                size: 4 << 30,
                limit
            }),
            "{kind:?}: {e}"
        );
        assert_eq!(
            e.to_string(),
            format!("{what} of 4294967296 bytes, over the {limit}-byte limit")
        );
        // At the bound itself, the header is followed (and its data read).
        let h = header(kind, "././@LongLink", limit);
        let mut b = Bounded::new(io::empty());
        b.follow(h.as_bytes()).unwrap();
        assert!(matches!(b.state, State::Data { left, .. } if left == limit));
    }
}

#[test]
fn real_archives_pass_through_unchanged() {
    // GNU long names and link targets, PAX records (xattrs), files of every size.
    let mut b = tar::Builder::new(Vec::new());
    let long = format!("{}/file", "d".repeat(300));
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(3);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, "link", "t".repeat(400)).unwrap();
    b.append_pax_extensions([("SCHILY.xattr.user.a", &b"1"[..])])
        .unwrap();
    for n in [0usize, 1, 511, 512, 513, 70_000] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(n as u64);
        b.append_data(&mut h, format!("f{n}"), &vec![7u8; n][..])
            .unwrap();
    }
    let data = b.into_inner().unwrap();
    let plain = entries_of(&data[..]).unwrap();
    let bounded = entries_of(Bounded::new(&data[..])).unwrap();
    assert_eq!(plain, bounded);
    assert_eq!(bounded.len(), 8);
    let mut copy = Vec::new();
    Bounded::new(&data[..]).read_to_end(&mut copy).unwrap();
    assert_eq!(copy, data);
}

#[test]
fn a_pax_size_moves_the_next_header_and_is_followed() {
    // PAX says the file holds 600 bytes though its header says 0: the crate reads 600 (and
    // the padding to 1024), so the next header is two blocks further. An oversized long
    // name there must be seen where the crate will read it.
    let records = b"12 size=600\n";
    let x = header(tar::EntryType::XHeader, "pax", records.len() as u64);
    let f = header(tar::EntryType::Regular, "big", 0);
    let l = header(tar::EntryType::GNULongName, "././@LongLink", 1 << 30);
    let mut data = Vec::new();
    data.extend_from_slice(x.as_bytes());
    data.extend_from_slice(&padded(records));
    data.extend_from_slice(f.as_bytes());
    data.extend_from_slice(&padded(&[1u8; 600]));
    data.extend_from_slice(l.as_bytes());
    let mut a = tar::Archive::new(Bounded::new(data.as_slice().chain(NeverRead)));
    let mut es = a.entries().unwrap();
    let first = es.next().unwrap().unwrap();
    assert_eq!(
        (first.path_bytes().as_ref(), first.size()),
        (&b"big"[..], 600)
    );
    drop(first);
    let Some(Err(e)) = es.next() else {
        panic!("the oversized long name was not refused")
    };
    assert_eq!(
        HeaderTooLarge::find(&e).map(|t| t.what),
        Some("a GNU long name"),
        "{e}"
    );
}
