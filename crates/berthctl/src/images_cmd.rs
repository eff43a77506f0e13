//! The image commands: pull, images, inspect, tag, rmi, image prune, import, load, save,
//! login, logout.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use berth_image::archive::{self, ArchiveFormat, ExportImage};
use berth_image::build::simple_config;
use berth_image::images::ImageRecord;
use berth_image::registry::{AuthStore, RegistriesConfig};

use crate::cli;
use berth_engine::Store;

pub fn pull(s: &Store, p: &cli::Pull) -> Result<ExitCode> {
    let img = crate::pull::pull(s, &p.image, p.platform.as_deref(), p.quiet)?;
    println!("{}", img.id);
    Ok(ExitCode::SUCCESS)
}

fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

fn split_name(n: &str) -> (String, String) {
    match n.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (n.to_string(), "<none>".into()),
    }
}

pub fn images(s: &Store, a: &cli::Images) -> Result<ExitCode> {
    let list = s.images.list()?;
    if a.quiet {
        for i in &list {
            println!("{}", i.short_id());
        }
        return Ok(ExitCode::SUCCESS);
    }
    // What podman shows as SIZE: the layers' uncompressed bytes.
    let sizes = s.images.unpacked_sizes(&s.content, &list)?;
    match a.format.as_str() {
        "json" => {
            let v: Vec<serde_json::Value> = list
                .iter()
                .zip(&sizes)
                .map(|(i, size)| {
                    serde_json::json!({
                        "Id": i.id.to_string(), "Names": i.names, "Digest": i.manifest_digest.to_string(),
                        "Size": size, "BlobSize": i.size, "Created": i.created, "Os": i.os,
                        "Architecture": i.architecture, "Layers": i.layers.len(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        "table" => {
            let mut rows = vec![[
                "REPOSITORY".to_string(),
                "TAG".to_string(),
                "IMAGE ID".to_string(),
                "SIZE".to_string(),
            ]];
            for (i, size) in list.iter().zip(&sizes) {
                let names = if i.names.is_empty() {
                    vec!["<none>:<none>".to_string()]
                } else {
                    i.names.clone()
                };
                for n in names {
                    let (repo, tag) = split_name(&n);
                    rows.push([repo, tag, i.short_id().to_string(), human_size(*size)]);
                }
            }
            print!("{}", columns(&rows));
        }
        f => bail!("--format {f:?}: use table or json"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Rows as left-aligned columns as wide as their widest cell, two spaces apart (what
/// podman's tabwriter gives): every value starts under its header.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (k, (cell, w)) in r.iter().zip(widths).enumerate() {
            line.push_str(cell);
            if k + 1 < N {
                line.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn inspect(s: &Store, a: &cli::Inspect) -> Result<ExitCode> {
    if let Some(img) = s.find_local(&a.name)? {
        let config: serde_json::Value = serde_json::from_slice(&s.content.read(&img.id)?)?;
        let manifest: serde_json::Value =
            serde_json::from_slice(&s.content.read(&img.manifest_digest)?)?;
        let v = serde_json::json!({"Image": img, "Manifest": manifest, "Config": config});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Ok(r) = s.records.find(&a.name) {
        let (status, _) = crate::containers::status_text(s, &r);
        let mut v = serde_json::to_value(&r)?;
        v["Status"] = serde_json::json!(status);
        v["Rootfs"] = serde_json::json!(s.snapshots.rootfs(&r.id));
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    bail!("no image or container named {:?}", a.name)
}

/// A user's name for a new tag, made full: `name` → `localhost/name:latest`.
fn full_name(n: &str) -> Result<String> {
    let parsed = berth_image::registry::ImageName::parse(n)
        .or_else(|_| berth_image::registry::ImageName::parse(&format!("localhost/{n}")))
        .with_context(|| format!("{n:?} is not a valid image name"))?;
    if parsed.digest.is_some() {
        bail!("{n:?}: a tag cannot carry a digest");
    }
    let full = if berth_image::registry::ImageName::is_fully_qualified(n) {
        parsed
    } else {
        berth_image::registry::ImageName::parse(&format!("localhost/{n}"))?
    };
    // Display gives the canonical name, `:latest` included when no tag was given.
    Ok(full.to_string())
}

pub fn tag(s: &Store, source: &str, target: &str) -> Result<ExitCode> {
    let name = full_name(target)?;
    s.image(source)?;
    s.images.tag(source, &s.candidates(source), &name)?;
    Ok(ExitCode::SUCCESS)
}

pub fn rmi(s: &Store, a: &cli::Rmi) -> Result<ExitCode> {
    let mut failed = false;
    for q in &a.images {
        match rmi_one(s, q, a.force) {
            Ok(msg) => println!("{msg}"),
            Err(e) => {
                eprintln!("berthctl: rmi {q}: {e:#}");
                failed = true;
            }
        }
    }
    s.collect_garbage()?;
    Ok(if failed {
        ExitCode::from(125)
    } else {
        ExitCode::SUCCESS
    })
}

fn rmi_one(s: &Store, q: &str, force: bool) -> Result<String> {
    let img = s.image(q)?;
    // By one of several names: only that name goes (docker's and podman's rule).
    let named = img
        .names
        .iter()
        .find(|n| *n == q || **n == format!("{q}:latest") || s.candidates(q).contains(n));
    if let (Some(n), true) = (named, img.names.len() > 1) {
        s.images.untag(n)?;
        return Ok(format!("Untagged: {n}"));
    }
    if img.names.len() > 1 && !force {
        bail!(
            "image {} has several names ({}): remove them by name, or use --force",
            img.short_id(),
            img.names.join(", ")
        );
    }
    if !force {
        s.check_unused(&img)?;
    }
    s.images.remove(&img.id)?;
    Ok(format!("Deleted: {}", img.id))
}

pub fn prune(s: &Store, all: bool) -> Result<ExitCode> {
    let mut removed = 0;
    for img in s.images.list()? {
        let dangling = img.names.is_empty();
        if (dangling || all) && s.users_of(&img)?.is_empty() {
            s.images.remove(&img.id)?;
            println!("{}", img.id);
            removed += 1;
        }
    }
    let (blobs, layers) = s.collect_garbage()?;
    eprintln!("Removed {removed} image(s), {blobs} blob(s), {layers} unpacked layer(s)");
    Ok(ExitCode::SUCCESS)
}

pub fn import(s: &Store, a: &cli::Import) -> Result<ExitCode> {
    let name = a.name.as_deref().map(full_name).transpose()?;
    let _hold = s.images.hold_for_write()?;
    // Streamed, never held in memory: walked and hashed, then copied into the store.
    let fetched = archive::import_rootfs(
        &s.content,
        &a.tarball,
        name,
        simple_config(&["sh"]),
        berth_image::builtin::host_architecture(),
    )?;
    let rec = s.images.add(&s.content, &fetched, &[])?;
    println!("{}", rec.id);
    Ok(ExitCode::SUCCESS)
}

pub fn load(s: &Store, a: &cli::Load) -> Result<ExitCode> {
    let plat = crate::pull::platform(a.platform.as_deref())?;
    let _hold = s.images.hold_for_write()?;
    let fetched = archive::import(
        &s.content,
        &a.input,
        (&plat.os, &plat.architecture, plat.variant.as_deref()),
    )?;
    if fetched.is_empty() {
        bail!("{}: no image in it", a.input.display());
    }
    for f in &fetched {
        let rec = s.images.add(&s.content, f, &[])?;
        match &f.name {
            Some(n) => println!("Loaded image: {n}"),
            None => println!("Loaded image: {}", rec.id),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn save(s: &Store, a: &cli::Save) -> Result<ExitCode> {
    let format = match a.format.as_str() {
        "oci-archive" => ArchiveFormat::OciArchive,
        "docker-archive" => ArchiveFormat::DockerArchive,
        "oci-dir" => ArchiveFormat::OciLayout,
        f => bail!("--format {f:?}: use oci-archive, docker-archive or oci-dir"),
    };
    let imgs: Vec<(ImageRecord, Option<String>)> = a
        .images
        .iter()
        .map(|q| {
            let img = s.image(q)?;
            let name = img
                .names
                .iter()
                .find(|n| *n == q || **n == format!("{q}:latest") || s.candidates(q).contains(n))
                .or(img.names.first())
                .cloned();
            Ok((img, name))
        })
        .collect::<Result<_>>()?;
    let export: Vec<ExportImage> = imgs
        .iter()
        .map(|(i, n)| ExportImage {
            name: n.as_deref(),
            manifest_digest: &i.manifest_digest,
        })
        .collect();
    archive::export(&s.content, &export, format, &a.output)?;
    Ok(ExitCode::SUCCESS)
}

pub fn login(s: &Store, a: &cli::Login) -> Result<ExitCode> {
    let user = match &a.username {
        Some(u) => u.clone(),
        None => bail!("login {}: give --username", a.registry),
    };
    let pass = if a.password_stdin {
        let mut p = String::new();
        std::io::stdin().read_to_string(&mut p)?;
        p.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = &a.password {
        p.clone()
    } else if std::io::stdin().is_terminal() {
        prompt_password()?
    } else {
        bail!("login {}: give --password or --password-stdin", a.registry)
    };
    let config = RegistriesConfig::load(&s.registries_conf)?;
    let auth = AuthStore::from_env();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = rt.block_on(auth.login(&config, &a.registry, &user, &pass))?;
    eprintln!("Login Succeeded (credentials in {})", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Reads a password from the terminal without echoing it.
fn prompt_password() -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    eprint!("Password: ");
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    let mut line = String::new();
    let r = stdin.read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    r?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn logout(_s: &Store, registry: &str) -> Result<ExitCode> {
    let auth = AuthStore::from_env();
    let path = auth.logout(registry)?;
    eprintln!(
        "Removed login credentials for {registry} from {}",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
