//! The CNI specification versions Berth speaks.

use std::fmt;
use std::str::FromStr;

/// A version of the CNI specification that a network configuration may name.
///
/// 0.3.0 and 0.3.1 differ from 0.4.0 only in lacking CHECK (and `prevResult` on DEL, which
/// plugins of those versions ignore), and 0.4.0 from 1.0.0 only in the `version` field of
/// each IP and in single-plugin configurations: so one result shape and one invocation
/// serve all four. 0.1.0 and 0.2.0 (the `ip4`/`ip6` result) are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
}

impl CniVersion {
    /// Every version accepted, oldest first.
    pub const ALL: [CniVersion; 4] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
    ];

    /// The version as the spec writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
        }
    }

    /// Whether plugins of this version know CHECK (0.4.0 and later).
    pub fn has_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version string that is not one of [`CniVersion::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedVersion(pub String);

impl fmt::Display for UnsupportedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cniVersion {:?} is not supported (supported: 1.0.0, 0.4.0, 0.3.1, 0.3.0)",
            self.0
        )
    }
}

impl std::error::Error for UnsupportedVersion {}

impl FromStr for CniVersion {
    type Err = UnsupportedVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnsupportedVersion(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_versions_and_nothing_else() {
        for v in CniVersion::ALL {
            assert_eq!(v.as_str().parse::<CniVersion>(), Ok(v));
        }
        for bad in ["0.2.0", "0.1.0", "1.1.0", "1.0", "", " 1.0.0", "v1.0.0"] {
            assert!(bad.parse::<CniVersion>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn check_starts_at_0_4_0() {
        assert!(!CniVersion::V0_3_0.has_check());
        assert!(!CniVersion::V0_3_1.has_check());
        assert!(CniVersion::V0_4_0.has_check());
        assert!(CniVersion::V1_0_0.has_check());
    }
}
