//! A `linux.seccomp` section on its own: JSON into oci-spec's `LinuxSeccomp`, then
//! `berth_seccomp::compile`, which validates it and builds the BPF program with
//! libseccomp. Any input must give a filter or an error, never a panic. The filter is
//! never loaded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::LinuxSeccomp;

/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
const BPF_MAXINSNS: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(seccomp) = serde_json::from_slice::<LinuxSeccomp>(data) else {
        return;
    };
    if let Ok(filter) = berth_seccomp::compile(&seccomp) {
        let len = filter.instruction_count();
        assert!(
            (1..=BPF_MAXINSNS).contains(&len),
            "compiled filter has {len} instructions"
        );
    }
});
