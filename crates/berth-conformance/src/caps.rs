//! Linux capability names and their bit numbers (linux/capability.h).

/// Capability names indexed by bit number.
pub const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The bit of a capability name, `None` if the name is unknown.
pub fn bit(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|b| b as u32)
}

/// The canonical text of a capability mask: names in bit order joined by commas, `none` for
/// the empty set. Bits without a name are written `CAP_<bit>`.
pub fn mask_to_text(mask: u64) -> String {
    let names: Vec<String> = (0..64)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| match NAMES.get(b) {
            Some(n) => (*n).to_string(),
            None => format!("CAP_{b}"),
        })
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(",")
    }
}

/// The mask of a list of capability names; unknown names are an error naming them.
pub fn names_to_mask(names: &[&str]) -> Result<u64, String> {
    names.iter().try_fold(0u64, |mask, n| match bit(n) {
        Some(b) => Ok(mask | (1u64 << b)),
        None => Err(format!("unknown capability {n}")),
    })
}

/// The canonical text of a list of capability names (see [`mask_to_text`]).
pub fn names_to_text(names: &[&str]) -> Result<String, String> {
    names_to_mask(names).map(mask_to_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_in_bit_order() {
        assert_eq!(bit("CAP_CHOWN"), Some(0));
        assert_eq!(bit("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(bit("CAP_AUDIT_WRITE"), Some(29));
        assert_eq!(bit("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(bit("CAP_NONSENSE"), None);
    }

    #[test]
    fn text_is_canonical_whatever_the_order() {
        let a = names_to_text(&["CAP_KILL", "CAP_CHOWN"]).unwrap();
        let b = names_to_text(&["CAP_CHOWN", "CAP_KILL", "CAP_KILL"]).unwrap();
        assert_eq!(a, "CAP_CHOWN,CAP_KILL");
        assert_eq!(a, b);
        assert_eq!(mask_to_text(0), "none");
        assert_eq!(mask_to_text(1 << 63), "CAP_63");
    }

    #[test]
    fn unknown_names_are_refused() {
        assert_eq!(
            names_to_mask(&["CAP_KILL", "CAP_BOGUS"]).unwrap_err(),
            "unknown capability CAP_BOGUS"
        );
    }
}
