use super::*;

fn hello() -> Frame {
    Frame::Hello(Hello {
        version: VERSION,
        peer: "test".into(),
    })
}

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        encode(f, &mut out).unwrap();
    }
    out
}

fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Frame>, ProtoError> {
    d.push(bytes);
    let mut out = Vec::new();
    while let Some(f) = d.next_frame()? {
        out.push(f);
    }
    Ok(out)
}

fn from_agent_frames() -> Vec<Frame> {
    vec![
        hello(),
        Frame::Response {
            id: 7,
            response: Response::Started { pid: 42 },
        },
        Frame::Data {
            stream: 3,
            bytes: b"hello\n".to_vec(),
        },
        Frame::Close { stream: 3 },
        Frame::Event(Event::Exited {
            id: "c1".into(),
            exec_id: None,
            code: 137,
            oom_killed: true,
        }),
        Frame::Response {
            id: 8,
            response: Response::Error {
                message: "no such container".into(),
            },
        },
    ]
}

#[test]
fn frames_round_trip_whole_and_byte_by_byte() {
    let frames = from_agent_frames();
    let bytes = wire(&frames);
    assert_eq!(
        decode_all(&mut Decoder::from_agent(), &bytes).unwrap(),
        frames
    );
    // One byte at a time, as a slow serial port delivers them.
    let mut d = Decoder::from_agent();
    let mut got = Vec::new();
    for b in &bytes {
        got.extend(decode_all(&mut d, std::slice::from_ref(b)).unwrap());
    }
    assert_eq!(got, frames);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn host_frames_round_trip_for_the_agent() {
    let frames = vec![
        hello(),
        Frame::Request {
            id: 1,
            request: Request::Create {
                id: "c1".into(),
                config: serde_json::json!({"ociVersion": "1.0.2"}),
                rootfs: Rootfs {
                    layers: vec!["berth-l0".into(), "berth-l1".into()],
                    upper: None,
                },
                stdio: Stdio {
                    stdin: Some(1),
                    stdout: Some(2),
                    stderr: Some(3),
                    terminal: false,
                },
                files: [("hosts".to_string(), "127.0.0.1\tlocalhost\n".to_string())].into(),
                volumes: vec!["berth-v0".into()],
            },
        },
        Frame::Request {
            id: 2,
            request: Request::Shutdown {},
        },
        Frame::Data {
            stream: 1,
            bytes: vec![0, 1, 2],
        },
    ];
    assert_eq!(
        decode_all(&mut Decoder::from_host(), &wire(&frames)).unwrap(),
        frames
    );
}

#[test]
fn an_oversized_length_is_refused_before_anything_is_buffered() {
    let mut d = Decoder::from_agent();
    // Only the length word of a 2 GiB frame: refused at once.
    d.push(&0x8000_0000u32.to_be_bytes());
    assert_eq!(d.next_frame(), Err(ProtoError::TooLong(0x8000_0000 + 4)));
    // And forever after: the stream cannot be trusted again.
    d.push(&wire(&[hello()]));
    assert!(d.next_frame().is_err());
    assert_eq!(d.buffered(), 0);
}

#[test]
fn what_the_agent_may_not_send_ends_the_stream() {
    let request = wire(&[
        hello(),
        Frame::Request {
            id: 1,
            request: Request::Shutdown {},
        },
    ]);
    let e = decode_all(&mut Decoder::from_agent(), &request).unwrap_err();
    assert_eq!(
        e,
        ProtoError::NotAllowed {
            kind: Kind::Request,
            from: Side::Agent
        }
    );
    // Nothing before the Hello.
    let early = wire(&[Frame::Close { stream: 1 }]);
    assert_eq!(
        decode_all(&mut Decoder::from_agent(), &early).unwrap_err(),
        ProtoError::NoHello(Kind::Close)
    );
    // Another version.
    let mut d = Decoder::from_agent();
    let old = wire(&[Frame::Hello(Hello {
        version: VERSION + 1,
        peer: "future".into(),
    })]);
    assert_eq!(
        decode_all(&mut d, &old).unwrap_err(),
        ProtoError::Version {
            theirs: VERSION + 1
        }
    );
}

#[test]
fn malformed_frames_are_errors_naming_the_kind_and_channel() {
    let mut bytes = wire(&[hello()]);
    // A Response whose JSON is not one.
    let payload = br#"{"result":"started","pid":"x"}"#;
    bytes.extend_from_slice(&((payload.len() + 5) as u32).to_be_bytes());
    bytes.push(Kind::Response as u8);
    bytes.extend_from_slice(&9u32.to_be_bytes());
    bytes.extend_from_slice(payload);
    match decode_all(&mut Decoder::from_agent(), &bytes).unwrap_err() {
        ProtoError::Malformed { kind, channel, .. } => {
            assert_eq!((kind, channel), (Kind::Response, 9))
        }
        e => panic!("{e:?}"),
    }
    // An unknown kind, a frame shorter than its header, bytes in a Close.
    for (frame, want) in [
        (
            vec![0, 0, 0, 5, 99, 0, 0, 0, 0],
            ProtoError::UnknownKind(99),
        ),
        (vec![0, 0, 0, 2, 4, 0], ProtoError::TooShort(6)),
    ] {
        let mut b = wire(&[hello()]);
        b.extend_from_slice(&frame);
        assert_eq!(
            decode_all(&mut Decoder::from_agent(), &b).unwrap_err(),
            want
        );
    }
    let mut b = wire(&[hello()]);
    b.extend_from_slice(&[0, 0, 0, 6, Kind::Close as u8, 0, 0, 0, 1, b'x']);
    assert!(matches!(
        decode_all(&mut Decoder::from_agent(), &b).unwrap_err(),
        ProtoError::Malformed {
            kind: Kind::Close,
            ..
        }
    ));
    // Unknown fields are refused, not ignored.
    let mut b = wire(&[hello()]);
    let payload = br#"{"result":"done","extra":1}"#;
    b.extend_from_slice(&((payload.len() + 5) as u32).to_be_bytes());
    b.push(Kind::Response as u8);
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(payload);
    assert!(decode_all(&mut Decoder::from_agent(), &b).is_err());
}

#[test]
fn data_is_split_to_fit_and_oversized_payloads_are_refused() {
    let big = vec![7u8; MAX_DATA * 2 + 10];
    let frames: Vec<Frame> = data_frames(5, &big).collect();
    assert_eq!(frames.len(), 3);
    let mut out = Vec::new();
    for f in &frames {
        encode(f, &mut out).unwrap();
    }
    let mut d = Decoder::from_agent();
    d.push(&wire(&[hello()]));
    d.next_frame().unwrap();
    d.push(&out);
    let mut joined = Vec::new();
    while let Some(Frame::Data { bytes, .. }) = d.next_frame().unwrap() {
        joined.extend(bytes);
    }
    assert_eq!(joined, big);
    let e = encode(
        &Frame::Data {
            stream: 1,
            bytes: big,
        },
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(e, ProtoError::Oversized(Kind::Data));
}

#[test]
fn a_call_keeps_what_comes_before_its_response_in_order() {
    use std::os::unix::net::UnixStream;
    let (host, agent) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut a = Conn::agent(agent);
        a.handshake("agent").unwrap();
        let Frame::Request { id, .. } = a.recv().unwrap() else {
            panic!("a request first")
        };
        a.send(&Frame::Data {
            stream: 2,
            bytes: b"out".to_vec(),
        })
        .unwrap();
        a.send(&Frame::Event(Event::Oom { id: "c".into() }))
            .unwrap();
        a.send(&Frame::Response {
            id,
            response: Response::Started { pid: 9 },
        })
        .unwrap();
        // The next request gets a response to one never made.
        let Frame::Request { id: next, .. } = a.recv().unwrap() else {
            panic!("a second request")
        };
        a.send(&Frame::Response {
            id: next + 40,
            response: Response::Done {},
        })
        .unwrap();
    });
    let mut h = Conn::host(host);
    assert_eq!(h.handshake("host").unwrap().peer, "agent");
    let r = h.call(Request::Start { id: "c".into() }).unwrap();
    assert_eq!(r, Response::Started { pid: 9 });
    assert!(matches!(h.recv().unwrap(), Frame::Data { stream: 2, .. }));
    assert!(matches!(h.recv().unwrap(), Frame::Event(Event::Oom { .. })));
    let e = h.call(Request::Stats { id: "c".into() }).unwrap_err();
    assert!(e.to_string().contains("waiting for"), "{e}");
    t.join().unwrap();
}
