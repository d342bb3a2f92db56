//! Unit tests of `registrar`.

use super::*;
use crate::tpm::TpmError;

fn v(minor: u8) -> ApiVersion {
    ApiVersion::new(2, minor)
}

#[test]
fn picks_the_highest_common_version_of_each_release() {
    let all = KNOWN_VERSIONS;
    // 7.14.3: current 2.6, and 3.0 (push) in the list.
    let r714 = json!({"results": {"current_version": "2.6",
        "supported_versions": ["1.0", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "3.0"]}});
    assert_eq!(choose_version(&r714, all).expect("7.14"), v(6));
    // 7.13.1 and 7.12.2 answer without an envelope in some releases.
    let r713 = json!({"current_version": "2.4", "supported_versions": ["1.0", "2.0", "2.1", "2.2", "2.3", "2.4"]});
    assert_eq!(choose_version(&r713, all).expect("7.13"), v(4));
    let r712 = json!({"results": {"current_version": "2.3", "supported_versions": ["2.0", "2.1", "2.2", "2.3"]}});
    assert_eq!(choose_version(&r712, all).expect("7.12"), v(3));
    // A limit below the registrar's newest.
    assert_eq!(choose_version(&r714, &[v(1), v(2)]).expect("limited"), v(2));
}

#[test]
fn only_a_refused_activation_asks_for_a_fresh_challenge() {
    let tss = |op| {
        RegistrarError::Tpm(TpmError::Tss {
            op,
            source: tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::InternalError),
        })
    };
    assert!(tss(tpm::ACTIVATE_CREDENTIAL_OP).is_rejected_challenge());
    assert!(!tss("reading the EK public area").is_rejected_challenge());
    assert!(!RegistrarError::IdentityConflict {
        agent_id: "x".into()
    }
    .is_rejected_challenge());
}

#[test]
fn no_common_version_names_the_key() {
    let r712 =
        json!({"current_version": "2.3", "supported_versions": ["2.0", "2.1", "2.2", "2.3"]});
    let err = choose_version(&r712, &[v(5), v(6)]).expect_err("none in common");
    let text = err.to_string();
    assert!(
        text.contains("registrar_api_versions allows 2.5, 2.6"),
        "{text}"
    );
    assert!(text.contains("offers API 2.0, 2.1, 2.2, 2.3"), "{text}");
    assert!(!err.is_retryable());
}

#[test]
fn retry_after_sets_the_pause_else_the_policy_backoff() {
    let policy = RetryPolicy {
        max_retries: None,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(60),
        jitter: 0.5,
    };
    let status = |status: u16, retry_after: Option<u64>| RegistrarError::Status {
        op: "register",
        status,
        retry_after,
        body: String::new(),
    };
    assert_eq!(
        pause_before(&policy, &status(429, Some(1)), 1, 0.0),
        Duration::from_secs(1)
    );
    // A 503 without Retry-After: the backoff, doubling, jitter shortening.
    assert_eq!(
        pause_before(&policy, &status(503, None), 1, 0.0),
        Duration::from_millis(100)
    );
    assert_eq!(
        pause_before(&policy, &status(503, None), 2, 0.5),
        Duration::from_millis(150)
    );
}

#[test]
fn iak_qualifying_data_follows_the_registrar_api() {
    let id = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
    assert_eq!(
        super::iak_qualifying_data(ApiVersion::new(2, 6), id),
        openssl::sha::sha256(id.as_bytes()).to_vec()
    );
    assert_eq!(
        super::iak_qualifying_data(ApiVersion::new(2, 5), id),
        id.as_bytes().to_vec()
    );
    assert_eq!(
        super::iak_qualifying_data(ApiVersion::new(2, 3), id),
        id.as_bytes().to_vec()
    );
}

#[test]
fn only_the_concurrent_registration_403_is_retried() {
    // The two 403 texts of the Keylime 7.14.3 registrar.
    let race = r#"{"code": 403, "status": "Agent with UUID 'x' cannot be registered. This UUID is already in use or a concurrent registration is in progress.", "results": {}}"#;
    let change = r#"{"code": 403, "status": "Agent re-registration with different TPM identity is forbidden for security reasons", "results": {}}"#;
    assert!(super::is_concurrent_registration(race));
    assert!(!super::is_concurrent_registration(change));
    let retried = RegistrarError::ConcurrentRegistration {
        agent_id: "x".into(),
    };
    assert!(retried.is_retryable());
    let refused = RegistrarError::IdentityConflict {
        agent_id: "x".into(),
    };
    assert!(!refused.is_retryable());
}
