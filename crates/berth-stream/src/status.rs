//! What goes on the error stream when a command ends.
//!
//! Protocol v4 and later (SPDY `v4.channel.k8s.io`, WebSocket `v4.*` and `v5.*`) send a
//! Kubernetes `metav1.Status` as JSON; a non-zero exit is a Failure with reason
//! `NonZeroExitCode` and the code in `details.causes[{reason: "ExitCode"}]`, which is how
//! kubectl learns the code. Earlier protocols send nothing on success and the message text
//! on failure.

use serde_json::json;

use crate::Outcome;

/// The v4 Status for `outcome`.
pub fn v4(outcome: &Outcome) -> Vec<u8> {
    let v = match outcome {
        Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": message(outcome),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(_) => json!({
            "metadata": {},
            "status": "Failure",
            "message": message(outcome),
            "reason": "InternalError",
            "details": {"causes": [{"message": message(outcome)}]},
            "code": 500,
        }),
    };
    v.to_string().into_bytes()
}

/// The pre-v4 text for `outcome`: none on success.
pub fn text(outcome: &Outcome) -> Option<Vec<u8>> {
    match outcome {
        Outcome::Exited(0) => None,
        _ => Some(message(outcome).into_bytes()),
    }
}

fn message(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Exited(code) => {
            format!("command terminated with non-zero exit code: exit status {code}")
        }
        Outcome::Failed(msg) => format!("Internal error occurred: {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_is_the_bare_status() {
        assert_eq!(
            v4(&Outcome::Exited(0)),
            br#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(text(&Outcome::Exited(0)), None);
    }

    #[test]
    fn a_non_zero_exit_carries_its_code() {
        let v: serde_json::Value = serde_json::from_slice(&v4(&Outcome::Exited(42))).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "42");
        assert!(String::from_utf8(text(&Outcome::Exited(42)).unwrap())
            .unwrap()
            .contains("42"));
    }

    #[test]
    fn a_failure_is_an_internal_error() {
        let v: serde_json::Value =
            serde_json::from_slice(&v4(&Outcome::Failed("no such container".into()))).unwrap();
        assert_eq!(v["reason"], "InternalError");
        assert!(v["message"].as_str().unwrap().contains("no such container"));
    }
}
