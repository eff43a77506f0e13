//! berthd pulling from a real registry on 127.0.0.1 (Debian's docker-registry): the
//! kubelet's credentials, a registry.k8s.io mirror, running the pulled image, and
//! RemoveImage refusing an image a container uses. Root only.

mod common;
#[path = "../../berth-image/tests/support/mod.rs"]
mod support;

use std::fs;

use common::*;
use k8s_cri::v1::*;
use support::{busybox_layout, Mode, Registry, PASSWORD, USER};
use tonic::Code;

fn pull(b: &Berthd, image: &str, auth: Option<AuthConfig>) -> Result<String, tonic::Status> {
    let mut is = b.is.clone();
    b.call(
        "PullImage",
        is.pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth,
            sandbox_config: None,
        }),
    )
    .map(|r| r.image_ref)
}

fn remove_image(b: &Berthd, image: &str) -> Result<(), tonic::Status> {
    let mut is = b.is.clone();
    b.call(
        "RemoveImage",
        is.remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        }),
    )
    .map(drop)
}

fn image_status(b: &Berthd, image: &str) -> Option<Image> {
    let mut is = b.is.clone();
    b.call(
        "ImageStatus",
        is.image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        }),
    )
    .unwrap()
    .image
}

/// Runs `cat /marker` from `image` in a pod; returns the pod, the container and its output.
fn run_marker(b: &Berthd, image: &str) -> (String, String, String) {
    let logs = b.dir.path().join("logs");
    let pc = pod_config("pulled", &logs);
    let pod = b.run_pod(&pc).unwrap();
    let mut cc = container_config("marker", "");
    cc.image = Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    });
    cc.command = vec!["cat".into(), "/marker".into()];
    let ctr = b.create(&pod, &cc, &pc).unwrap();
    b.start_ctr(&ctr).unwrap();
    b.wait_state(&ctr, ContainerState::ContainerExited);
    let out = log_texts(&logs.join("marker/0.log")).join("\n");
    (pod, ctr, out)
}

#[test]
fn pull_with_the_kubelets_credentials_run_and_remove() {
    if skip_unless_root("pull_with_the_kubelets_credentials_run_and_remove") {
        return;
    }
    support::require_tools();
    let reg = Registry::start(Mode::Basic);
    reg.push(
        &busybox_layout("pulled by berthd").path(),
        "t",
        "test/app:1",
        &[],
    );
    let b = Berthd::start();
    let image = format!("{}/test/app:1", reg.host());

    let err = pull(&b, &image, None).unwrap_err();
    assert!(err.message().contains(&image), "names the image: {err:?}");
    let wrong = AuthConfig {
        username: USER.into(),
        password: "wrong".into(),
        ..Default::default()
    };
    assert!(pull(&b, &image, Some(wrong)).is_err());
    let auth = AuthConfig {
        username: USER.into(),
        password: PASSWORD.into(),
        ..Default::default()
    };
    let id = pull(&b, &image, Some(auth)).unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    let img = image_status(&b, &image).expect("pulled");
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, std::slice::from_ref(&image));
    assert!(img.repo_digests[0].starts_with(&format!("{}/test/app@sha256:", reg.host())));

    let (pod, ctr, out) = run_marker(&b, &image);
    assert_eq!(out, "pulled by berthd");
    // In use by a container: refused, naming the image; nothing removed.
    let err = remove_image(&b, &image).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(image_status(&b, &image).is_some());
    b.remove_ctr(&ctr).unwrap();
    b.remove_pod(&pod).unwrap();
    remove_image(&b, &image).unwrap();
    assert!(image_status(&b, &image).is_none());
    remove_image(&b, &image).unwrap();
}

#[test]
fn registry_k8s_io_images_come_from_a_local_mirror() {
    if skip_unless_root("registry_k8s_io_images_come_from_a_local_mirror") {
        return;
    }
    support::require_tools();
    let reg = Registry::start(Mode::Http);
    reg.push(
        &busybox_layout("from the mirror").path(),
        "t",
        "e2e-test-images/busybox:1.29-2",
        &[],
    );
    let b = Berthd::start();
    fs::write(
        b.dir.path().join("registries.toml"),
        format!(
            "[[registry]]\nprefix = \"registry.k8s.io\"\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            reg.host()
        ),
    )
    .unwrap();
    // No internet: only the mirror can answer.
    let image = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
    pull(&b, image, None).unwrap();
    let (_, _, out) = run_marker(&b, image);
    assert_eq!(out, "from the mirror");
}
