//! URLs, tokens and protocol negotiation.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn an_unknown_token_is_404() {
    let h = harness().await;
    for path in [
        "/exec/nosuchtoken",
        "/exec/",
        "/portforward/x",
        "/other/x",
        "/",
    ] {
        let (head, _) = spdy_upgrade(h.addr, path, &["v4.channel.k8s.io"]).await;
        assert_eq!(head.status, 404, "{path}");
    }
}

#[tokio::test]
async fn a_token_works_once() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["out", "x", "0"], false, true, false, false))
        .unwrap();
    let (first, _s) = spdy_upgrade(h.addr, &path_of(&url), &["v4.channel.k8s.io"]).await;
    assert_eq!(first.status, 101);
    let (second, _) = spdy_upgrade(h.addr, &path_of(&url), &["v4.channel.k8s.io"]).await;
    assert_eq!(second.status, 404);
}

#[tokio::test]
async fn a_token_expires() {
    let h = harness_with(|c| c.token_ttl = Duration::from_millis(200)).await;
    let url = h
        .server
        .exec_url(exec_req(&["out", "x", "0"], false, true, false, false))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (head, _) = spdy_upgrade(h.addr, &path_of(&url), &["v4.channel.k8s.io"]).await;
    assert_eq!(head.status, 404);
}

#[tokio::test]
async fn a_token_serves_only_its_own_kind() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["out", "x", "0"], false, true, false, false))
        .unwrap();
    let path = path_of(&url).replace("/exec/", "/attach/");
    let (head, _) = spdy_upgrade(h.addr, &path, &["v4.channel.k8s.io"]).await;
    assert_eq!(head.status, 404);
}

#[tokio::test]
async fn an_unsupported_spdy_protocol_is_403_naming_ours_and_keeps_the_token() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["out", "x", "0"], false, true, false, false))
        .unwrap();
    let (head, _) = spdy_upgrade(h.addr, &path_of(&url), &["v9.channel.k8s.io"]).await;
    assert_eq!(head.status, 403);
    assert_eq!(
        head.header("X-Accepted-Stream-Protocol-Versions"),
        [
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io"
        ]
    );
    assert!(
        head.body.contains("v9.channel.k8s.io") && head.body.contains("v4.channel.k8s.io"),
        "{}",
        head.body
    );
    // A client that falls back to a protocol we speak still has its URL.
    let (ok, _s) = spdy_upgrade(
        h.addr,
        &path_of(&url),
        &["v9.channel.k8s.io", "v3.channel.k8s.io"],
    )
    .await;
    assert_eq!(ok.status, 101);
    assert_eq!(
        ok.header("X-Stream-Protocol-Version"),
        ["v3.channel.k8s.io"]
    );
}

#[tokio::test]
async fn port_forward_speaks_only_its_protocol() {
    let h = harness().await;
    let url = h.server.port_forward_url(pf_req()).unwrap();
    let (head, _) = spdy_upgrade(h.addr, &path_of(&url), &["v4.channel.k8s.io"]).await;
    assert_eq!(head.status, 403);
    assert_eq!(
        head.header("X-Accepted-Stream-Protocol-Versions"),
        ["portforward.k8s.io"]
    );
}

#[tokio::test]
async fn an_unsupported_websocket_protocol_is_400_naming_ours() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["out", "x", "0"], false, true, false, false))
        .unwrap();
    let (head, _) = request(
        h.addr,
        &path_of(&url),
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Protocol", "v9.channel.k8s.io"),
        ],
    )
    .await;
    assert_eq!(head.status, 400);
    assert!(
        head.body.contains("v5.channel.k8s.io") && head.body.contains("v9.channel.k8s.io"),
        "{}",
        head.body
    );
}

#[tokio::test]
async fn a_request_that_does_not_upgrade_is_400() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["out", "x", "0"], false, true, false, false))
        .unwrap();
    let (head, _) = request(h.addr, &path_of(&url), &[]).await;
    assert_eq!(head.status, 400);
    assert!(head.body.contains("SPDY/3.1"), "{}", head.body);
}

#[test]
fn bad_requests_get_no_url() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let h = harness().await;
        assert!(h
            .server
            .exec_url(exec_req(&["x"], false, false, false, false))
            .is_err());
        assert!(h
            .server
            .exec_url(exec_req(&["x"], false, true, true, true))
            .is_err());
        assert!(h
            .server
            .port_forward_url(berth_stream::PortForwardRequest {
                pod_sandbox_id: String::new(),
                ports: vec![]
            })
            .is_err());
        let url = h
            .server
            .exec_url(exec_req(&["x"], false, true, false, false))
            .unwrap();
        assert!(
            url.starts_with(&format!("http://{}/exec/", h.addr)),
            "{url}"
        );
    });
}
