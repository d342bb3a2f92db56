//! Unit tests of `revocation`.

use super::acted::parse_event_time;
use super::*;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const MSG: &str =
    r#"{"type": "revocation", "agent_id": "a1", "event_id": "pcr_validation.invalid_pcr_17"}"#;

struct Fixture {
    dir: tempfile::TempDir,
    key: PKey<openssl::pkey::Private>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
        let mut b = openssl::x509::X509::builder().expect("builder");
        b.set_pubkey(&key).expect("pubkey");
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).expect("t"))
            .expect("nb");
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).expect("t"))
            .expect("na");
        b.sign(&key, MessageDigest::sha256()).expect("sign");
        let unzipped = dir.path().join("unzipped");
        std::fs::create_dir_all(&unzipped).expect("mkdir");
        std::fs::write(
            unzipped.join(PAYLOAD_CERT),
            b.build().to_pem().expect("pem"),
        )
        .expect("cert");
        let marker = dir.path().join("marker");
        let action = dir.path().join("actions/mark.sh");
        std::fs::create_dir_all(action.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &action,
            format!("#!/bin/sh\ncp \"$1\" {}\n", marker.display()),
        )
        .expect("action");
        std::fs::set_permissions(&action, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Self { dir, key }
    }

    fn revocation(&self) -> Revocation {
        let config = RevocationConfig {
            cert: None,
            actions: vec!["mark.sh".into()],
            actions_dir: self.dir.path().join("actions"),
            allow_payload_actions: true,
            action_timeout: Duration::from_secs(5),
            zeromq_requested: false,
            state_dir: self.dir.path().join("revocation"),
        };
        adopt_payload_certificate(&self.dir.path().join("unzipped"), &config.state_dir)
            .expect("adopt");
        Revocation::new(
            config,
            self.dir.path().join("unzipped"),
            self.dir.path().to_path_buf(),
        )
    }

    fn sign(&self, msg: &str) -> String {
        let mut s = Signer::new(MessageDigest::sha256(), &self.key).expect("signer");
        s.set_rsa_padding(Padding::PKCS1_PSS).expect("pss");
        s.set_rsa_pss_saltlen(RsaPssSaltlen::MAXIMUM_LENGTH)
            .expect("salt");
        s.update(msg.as_bytes()).expect("update");
        B64.encode(s.sign_to_vec().expect("sign"))
    }

    fn marker(&self) -> PathBuf {
        self.dir.path().join("marker")
    }
}

#[tokio::test]
async fn a_signed_notification_runs_the_action_with_the_message_file() {
    let f = Fixture::new();
    let verdict = f
        .revocation()
        .handle(MSG, &f.sign(MSG))
        .expect("well-formed");
    assert!(
        matches!(verdict, Verdict::Verified(ref a) if a.len() == 1),
        "{verdict:?}"
    );
    for _ in 0..100 {
        if f.marker().exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read_to_string(f.marker()).expect("marker"), MSG);
}

#[tokio::test]
async fn a_configured_certificate_works_without_a_payload() {
    let f = Fixture::new();
    let configured = f.dir.path().join("revocation.crt");
    std::fs::rename(
        f.dir.path().join("unzipped").join(PAYLOAD_CERT),
        &configured,
    )
    .expect("move");
    let mut r = f.revocation();
    assert_eq!(
        r.handle(MSG, &f.sign(MSG)).expect("ok"),
        Verdict::NoCertificate
    );
    let mut config = (*r.config).clone();
    config.cert = Some(configured);
    r.config = Arc::new(config);
    assert!(matches!(
        r.handle(MSG, &f.sign(MSG)).expect("ok"),
        Verdict::Verified(_)
    ));
}

#[tokio::test]
async fn unsigned_forged_or_unverifiable_notifications_run_nothing() {
    let f = Fixture::new();
    let r = f.revocation();
    assert_eq!(r.handle(MSG, "").expect("ok"), Verdict::Unsigned);
    let forged = f.sign(r#"{"type": "revocation", "agent_id": "someone else"}"#);
    assert_eq!(r.handle(MSG, &forged).expect("ok"), Verdict::BadSignature);
    assert_eq!(
        r.handle(MSG, "not base64!").expect("ok"),
        Verdict::BadSignature
    );
    std::fs::remove_file(f.dir.path().join("revocation").join(PAYLOAD_CERT)).expect("rm");
    assert_eq!(
        r.handle(MSG, &f.sign(MSG)).expect("ok"),
        Verdict::NoCertificate
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!f.marker().exists());
    assert!(r.handle("not json", "").is_err());
    assert!(r.handle("\"a string\"", "").is_err());
}

#[tokio::test]
async fn a_message_acted_on_is_refused_again_and_after_a_restart_and_so_is_an_older_one() {
    let f = Fixture::new();
    let first =
        r#"{"type": "revocation", "agent_id": "a1", "event_time": "Sun Nov 22 04:24:56 2026"}"#;
    let older =
        r#"{"type": "revocation", "agent_id": "a2", "event_time": "Sat Nov  7 23:59:59 2026"}"#;
    let newer =
        r#"{"type": "revocation", "agent_id": "a3", "event_time": "Mon Nov 23 00:00:00 2026"}"#;
    let r = f.revocation();
    assert!(matches!(
        r.handle(first, &f.sign(first)).expect("ok"),
        Verdict::Verified(_)
    ));
    assert_eq!(
        r.handle(first, &f.sign(first)).expect("ok"),
        Verdict::Replayed
    );
    let restarted = f.revocation();
    assert_eq!(
        restarted.handle(first, &f.sign(first)).expect("ok"),
        Verdict::Replayed
    );
    assert_eq!(
        restarted.handle(older, &f.sign(older)).expect("ok"),
        Verdict::Stale
    );
    assert!(matches!(
        restarted.handle(newer, &f.sign(newer)).expect("ok"),
        Verdict::Verified(_)
    ));
    // An unverified message is never recorded: a forged copy of a new
    // message does not block the genuine one.
    let fresh =
        r#"{"type": "revocation", "agent_id": "a4", "event_time": "Tue Nov 24 00:00:00 2026"}"#;
    assert_eq!(
        restarted.handle(fresh, "Zm9yZ2Vk").expect("ok"),
        Verdict::BadSignature
    );
    assert!(matches!(
        restarted.handle(fresh, &f.sign(fresh)).expect("ok"),
        Verdict::Verified(_)
    ));
}

#[test]
fn event_times_order_in_time() {
    let t = |s| parse_event_time(s).expect(s);
    assert!(t("Sat Nov  7 23:59:59 2026") < t("Sun Nov 22 04:24:56 2026"));
    assert_eq!(
        t("Fri Jan  1 00:00:00 2027") - t("Thu Dec 31 23:59:59 2026"),
        1
    );
    assert_eq!(t("Thu Jan  1 00:00:00 1970"), 0);
    assert_eq!(
        t("Sun Mar  1 00:00:00 2026") - t("Sat Feb 28 00:00:00 2026"),
        86_400
    );
    assert_eq!(parse_event_time("yesterday"), None);
}
