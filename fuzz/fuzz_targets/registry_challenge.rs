//! A registry's `WWW-Authenticate` challenge (berth-image `registry::parse_challenge`) and
//! the check of the token realm it names (`registry::check_realm`): whatever the header says,
//! parsing ends, and a realm accepted for an https registry is an https URL, so credentials
//! never cross the network in clear.

#![no_main]

use berth_image::registry::{check_realm, parse_challenge, Challenge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let Some(Challenge::Bearer { realm, .. }) = parse_challenge(header) else {
        return;
    };
    if let Ok(url) = check_realm("https", &realm) {
        assert_eq!(
            url.scheme(),
            "https",
            "{realm:?} accepted for an https registry"
        );
    }
    if let Ok(url) = check_realm("http", &realm) {
        assert!(matches!(url.scheme(), "http" | "https"), "{realm:?}");
    }
});
