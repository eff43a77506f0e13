//! The harness's command line.

use std::path::PathBuf;

use clap::Parser;

/// Runs Berth's conformance cases against an OCI runtime with runc's command line.
#[derive(Debug, Parser)]
#[command(name = "berth-conformance", version)]
pub struct Cli {
    /// The runtime under test (berth, runc, crun, ...).
    #[arg(long, value_name = "PATH", required_unless_present = "list")]
    pub runtime: Option<PathBuf>,
    /// The static berth-check binary copied into every container (default: found next to
    /// this binary or in the target directory's release build).
    #[arg(long, value_name = "PATH", env = "BERTH_CHECK")]
    pub checker: Option<PathBuf>,
    /// The static busybox the rootfs is made of.
    #[arg(
        long,
        value_name = "PATH",
        env = "BERTH_TEST_BUSYBOX",
        default_value = "/bin/busybox"
    )]
    pub busybox: PathBuf,
    /// Run only the cases whose name contains this.
    #[arg(long, value_name = "SUBSTR")]
    pub filter: Option<String>,
    /// List the cases and what each checks, then exit.
    #[arg(long)]
    pub list: bool,
    /// Print one JSON object per case (and a summary object) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Negative control: negate every check; each case must then fail every check.
    #[arg(long)]
    pub negative: bool,
    /// Keep the bundles and runtime output under the work directory.
    #[arg(long)]
    pub keep: bool,
    /// Seconds one runtime command may take before it is killed and its case fails.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
}
