//! Port-forward over SPDY/3.1.

mod support;

use std::time::Duration;

use support::*;

async fn session(h: &Harness) -> SpdyClient {
    let url = h.server.port_forward_url(pf_req()).unwrap();
    let (head, sock) = spdy_upgrade(h.addr, &path_of(&url), &["portforward.k8s.io"]).await;
    assert_eq!(head.status, 101, "{head:?}");
    SpdyClient::start(sock, true)
}

async fn pair(c: &SpdyClient, port: u16, request: &str) -> (ClientStream, ClientStream) {
    let p = port.to_string();
    let error = c
        .open(&[
            ("streamtype", "error"),
            ("port", &p),
            ("requestid", request),
        ])
        .await;
    // As kubectl: the client writes nothing on the error stream.
    error.close().await;
    let data = c
        .open(&[("streamtype", "data"), ("port", &p), ("requestid", request)])
        .await;
    (error, data)
}

#[tokio::test]
async fn two_connections_at_once_reach_the_echo_server() {
    let h = harness().await;
    let echo = echo_server().await;
    let c = session(&h).await;
    let (_e0, mut d0) = pair(&c, echo, "0").await;
    let (_e1, mut d1) = pair(&c, echo, "1").await;
    d1.write(b"second").await;
    d0.write(b"first").await;
    assert_eq!(d0.read_n(5).await, b"first");
    assert_eq!(d1.read_n(6).await, b"second");
    // Closing our side half-closes the pod's; the echo server then ends, and so does the
    // stream.
    d0.close().await;
    assert_eq!(d0.read_to_end().await, b"");
    d1.write(b" still").await;
    assert_eq!(d1.read_n(6).await, b" still");
    assert_eq!(h.runtime.events(), [Event::Dial(echo), Event::Dial(echo)]);
}

#[tokio::test]
async fn a_failing_dial_is_reported_and_the_session_goes_on() {
    let h = harness().await;
    let echo = echo_server().await;
    let c = session(&h).await;
    let (mut e0, mut d0) = pair(&c, 1, "0").await;
    let msg = String::from_utf8(e0.read_to_end().await).unwrap();
    assert!(
        msg.contains("error forwarding port 1 to pod pod1") && msg.contains("nothing listens"),
        "{msg}"
    );
    assert_eq!(d0.read_to_end().await, b"");
    let (_e1, mut d1) = pair(&c, echo, "1").await;
    d1.write(b"after").await;
    assert_eq!(d1.read_n(5).await, b"after");
}

#[tokio::test]
async fn large_transfers_go_both_ways() {
    let h = harness().await;
    let echo = echo_server().await;
    let c = session(&h).await;
    let (_e, mut d) = pair(&c, echo, "0").await;
    let n = 3 << 20;
    let data = pattern(0, n);
    let writer = {
        let chunks: Vec<Vec<u8>> = data.chunks(16 * 1024).map(|c| c.to_vec()).collect();
        let d_id = d.id;
        let c = c.clone();
        tokio::spawn(async move {
            for ch in chunks {
                c.send_frame(berth_stream::spdy::frame::Frame::Data {
                    stream_id: d_id,
                    flags: 0,
                    data: ch.into(),
                })
                .await;
            }
        })
    };
    let got = d.read_n(n).await;
    writer.await.unwrap();
    assert!(got == data);
}

#[tokio::test]
async fn old_clients_pair_by_stream_id() {
    let h = harness().await;
    let echo = echo_server().await;
    let c = session(&h).await;
    let p = echo.to_string();
    let _error = c.open(&[("streamtype", "error"), ("port", &p)]).await;
    let mut data = c.open(&[("streamtype", "data"), ("port", &p)]).await;
    data.write(b"x").await;
    assert_eq!(data.read_n(1).await, b"x");
}

#[tokio::test]
async fn an_unpaired_stream_times_out_with_a_message() {
    let h = harness_with(|c| c.stream_creation_timeout = Duration::from_millis(300)).await;
    let c = session(&h).await;
    let mut error = c
        .open(&[("streamtype", "error"), ("port", "80"), ("requestid", "9")])
        .await;
    let msg = String::from_utf8(error.read_to_end().await).unwrap();
    assert!(msg.contains("timed out"), "{msg}");
    assert_eq!(h.runtime.events(), [], "nothing dialled");
}

#[tokio::test]
async fn streams_without_a_valid_port_or_type_are_reset() {
    let h = harness().await;
    let c = session(&h).await;
    for headers in [
        vec![("streamtype", "data"), ("requestid", "0")],
        vec![("streamtype", "data"), ("port", "0"), ("requestid", "0")],
        vec![("streamtype", "data"), ("port", "http"), ("requestid", "0")],
        vec![("streamtype", "stdout"), ("port", "80"), ("requestid", "0")],
        vec![("port", "80"), ("requestid", "0")],
    ] {
        let mut s = c.open_no_wait(&headers).await;
        let ev = tokio::time::timeout(WAIT, s.rx.recv()).await.unwrap();
        assert!(matches!(ev, Some(Ev::Reset(_))), "{headers:?}: {ev:?}");
    }
    // And the session still serves.
    let echo = echo_server().await;
    let (_e, mut d) = pair(&c, echo, "1").await;
    d.write(b"ok").await;
    assert_eq!(d.read_n(2).await, b"ok");
}
