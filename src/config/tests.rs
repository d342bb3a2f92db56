//! Config loading: layering, overrides, and the one-line errors.

use super::settings::tcti;
use super::versions::api_versions;
use super::*;
use crate::algorithms::HashAlg;
use crate::api_version::ApiVersion;
use crate::identity::AgentIdSource;
use std::io::Write;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir"))
    }
    fn file(&self, name: &str, body: &str) -> PathBuf {
        let path = self.0.path().join(name);
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(body.as_bytes()).expect("write");
        path
    }
    fn ca(&self) -> PathBuf {
        let key = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                .expect("group"),
        )
        .expect("key");
        let pkey = openssl::pkey::PKey::from_ec_key(key).expect("pkey");
        let mut b = openssl::x509::X509Builder::new().expect("builder");
        b.set_pubkey(&pkey).expect("pubkey");
        let mut name = openssl::x509::X509NameBuilder::new().expect("name");
        name.append_entry_by_nid(openssl::nid::Nid::COMMONNAME, "test CA")
            .expect("cn");
        let name = name.build();
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(&name).expect("issuer");
        let now = openssl::asn1::Asn1Time::days_from_now(0).expect("now");
        let later = openssl::asn1::Asn1Time::days_from_now(1).expect("later");
        b.set_not_before(&now).expect("not before");
        b.set_not_after(&later).expect("not after");
        b.sign(&pkey, openssl::hash::MessageDigest::sha256())
            .expect("sign");
        let pem = b.build().to_pem().expect("pem");
        self.file("ca.pem", std::str::from_utf8(&pem).expect("utf8"))
    }
}

fn load(files: Vec<PathBuf>, overrides: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    Config::load(&ConfigSources {
        files,
        files_required: true,
        overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        tcti_env: None,
    })
}

fn base(dir: &Dir) -> String {
    format!(
        "[agent]\nkeylime_dir = {:?}\ntrusted_client_ca = {:?}\n",
        dir.0.path().display().to_string(),
        dir.ca().display().to_string()
    )
}

#[test]
fn defaults_are_resolved() {
    let dir = Dir::new();
    let c = load(vec![dir.file("a.conf", &base(&dir))], &[])
        .expect("load")
        .config;
    assert_eq!(c.port, 9002);
    assert_eq!(c.contact_port, 9002);
    assert_eq!(c.registrar_port, 8890);
    assert_eq!(c.tpm_hash_alg, HashAlg::Sha256);
    assert_eq!(c.agent_id, AgentIdSource::Generate);
    assert_eq!(c.api_versions, ApiVersion::SUPPORTED.to_vec());
    assert_eq!(c.server_key, dir.0.path().join("server-private.pem"));
    assert_eq!(c.agent_data_path, dir.0.path().join("agent_data.json"));
    assert_eq!(c.registrar_retry.max_retries, None);
    assert_eq!(c.ek_handle, None);
}

#[test]
fn later_files_and_environment_override_earlier_ones() {
    let dir = Dir::new();
    let first = dir.file(
        "a.conf",
        &format!("{}port = 1000\nregistrar_port = 2000\n", base(&dir)),
    );
    let second = dir.file("b.conf", "[agent]\nport = 1001\n");
    let c = load(vec![first, second], &[("registrar_port", "2001")])
        .expect("load")
        .config;
    assert_eq!(c.port, 1001);
    assert_eq!(c.registrar_port, 2001);
}

#[test]
fn the_ukey_body_limit_fits_a_base64_payload_of_max_payload_size() {
    let dir = Dir::new();
    let file = dir.file("a.conf", &base(&dir));
    let c = load(vec![file], &[("max_payload_size", "3m")])
        .expect("load")
        .config;
    assert_eq!(c.api_limits.ukey_body_limit, 4 * 1024 * 1024 + 64 * 1024);
}

#[test]
fn tcti_precedence() {
    assert_eq!(tcti(Some("swtpm:port=1"), Some("mssim:")), "swtpm:port=1");
    assert_eq!(tcti(None, Some("mssim:")), "mssim:");
    assert!(tcti(None, Some("default")).starts_with("device:/dev/tpm"));
}

#[test]
fn each_bad_value_fails_with_one_line_naming_key_value_and_accepted() {
    let cases = [
        ("uuid", "not-a-uuid", "UUID"),
        ("port", "http", "port from 1 to 65535"),
        ("port", "70000", "port from 1 to 65535"),
        ("tpm_hash_alg", "md5", "sha256"),
        ("ek_handle", "0x01c00002", "0x81000000"),
        (
            "trusted_client_ca",
            "/nonexistent/ca.crt",
            "PEM CA certificate",
        ),
        ("api_versions", "2.0, 3.0", "2.6"),
        ("exponential_backoff_max_retries", "-1", "forever"),
        ("contact_ip", "bad host!", "host name"),
        ("registrar_tls_enabled", "yes please", "true"),
        ("registrar_api_versions", "2.7", "2.6"),
        ("metrics_address", "localhost", "IP:PORT"),
        ("metrics_address", "127.0.0.1:0", "IP:PORT"),
        ("log_format", "yaml", "json"),
        ("max_connections", "0", "1 to 65536"),
        ("tpm_encryption_alg", "rsa4096", "rsa3072"),
        ("registrar_refresh_interval", "30", "from 60 on"),
        ("registrar_refresh_interval", "hourly", "from 60 on"),
        ("enable_iak_idevid", "maybe", "true or false"),
    ];
    for (key, value, accepted) in cases {
        let dir = Dir::new();
        let err = load(vec![dir.file("a.conf", &base(&dir))], &[(key, value)])
            .err()
            .unwrap_or_else(|| panic!("{key} = {value} was accepted"));
        let line = err.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains(key) && line.contains(value) && line.contains(accepted),
            "{line}"
        );
    }
}

#[test]
fn registrar_refresh_is_off_by_default_and_full_jitter_is_the_default() {
    let dir = Dir::new();
    let conf = || vec![dir.file("a.conf", &base(&dir))];
    let default = load(conf(), &[]).expect("default").config;
    assert_eq!(default.registrar_refresh_interval, None);
    assert_eq!(default.registrar_retry.jitter, 1.0);
    let hourly = load(conf(), &[("registrar_refresh_interval", "3600")]).expect("3600");
    assert_eq!(
        hourly.config.registrar_refresh_interval,
        Some(std::time::Duration::from_secs(3600))
    );
    for off in ["off", "0", ""] {
        let loaded = load(conf(), &[("registrar_refresh_interval", off)]).expect("off");
        assert_eq!(loaded.config.registrar_refresh_interval, None, "{off:?}");
    }
}

#[test]
fn device_identity_keys_are_read_only_when_enabled_and_bad_ones_are_named() {
    let dir = Dir::new();
    let conf = || vec![dir.file("a.conf", &base(&dir))];
    let off = load(conf(), &[("iak_handle", "0x81020000")]).expect("off");
    assert!(off.config.device_identity.is_none());
    let on = load(
        conf(),
        &[
            ("enable_iak_idevid", "true"),
            ("iak_handle", "0x81020000"),
            ("iak_password", "hex:0102"),
            ("iak_idevid_template", "H-2"),
        ],
    )
    .expect("on");
    let identity = on.config.device_identity.expect("identity");
    assert_eq!(identity.iak.handle, Some(0x8102_0000));
    assert_eq!(identity.idevid.handle, None);
    assert_eq!(identity.iak.password.as_slice(), &[1, 2]);
    assert_eq!(identity.template, Some(crate::tpm::IdentityTemplate::H2));
    assert!(identity.iak.cert.ends_with("iak-cert.crt"));
    assert!(identity.idevid.cert.ends_with("idevid-cert.crt"));
    for (key, value, accepted) in [
        ("iak_idevid_template", "H-9", "detect, H-1, H-2, H-3"),
        ("iak_idevid_template", "manual", "detect, H-1, H-2, H-3"),
        ("iak_handle", "0x01c00002", "0x81000000"),
        ("idevid_handle", "generate", "recreate from the template"),
        ("idevid_password", "hex:xyz", "hex digits"),
    ] {
        let err = load(conf(), &[("enable_iak_idevid", "true"), (key, value)])
            .err()
            .unwrap_or_else(|| panic!("{key} = {value} was accepted"));
        let line = err.to_string();
        assert!(!line.contains('\n'), "{line}");
        // A password's value is never shown, not even a wrong one.
        let shown = if key.ends_with("password") {
            !line.contains(value) && line.contains("<redacted>")
        } else {
            line.contains(value)
        };
        assert!(
            line.contains(key) && shown && line.contains(accepted),
            "{line}"
        );
    }
}

#[test]
fn registrar_tls_needs_a_usable_ca_only_when_enabled() {
    let dir = Dir::new();
    let conf = || vec![dir.file("a.conf", &base(&dir))];
    let off = load(conf(), &[("registrar_tls_ca_cert", "/nonexistent/ca.crt")]).expect("off");
    assert_eq!(off.config.registrar_tls, None);
    let err = load(
        conf(),
        &[
            ("registrar_tls_enabled", "true"),
            ("registrar_tls_ca_cert", "/nonexistent/ca.crt"),
        ],
    )
    .expect_err("missing CA");
    let line = err.to_string();
    assert!(
        line.contains("registrar_tls_ca_cert") && line.contains("/nonexistent/ca.crt"),
        "{line}"
    );
    // "default" is cv_ca/cacert.crt under keylime_dir.
    let cv_ca = dir.0.path().join("cv_ca");
    std::fs::create_dir(&cv_ca).expect("mkdir");
    std::fs::copy(dir.ca(), cv_ca.join("cacert.crt")).expect("copy");
    let on = load(
        conf(),
        &[
            ("registrar_tls_enabled", "true"),
            ("registrar_tls_port", "9443"),
        ],
    )
    .expect("on")
    .config;
    assert_eq!(
        on.registrar_tls,
        Some(RegistrarTls {
            port: 9443,
            ca_cert: cv_ca.join("cacert.crt")
        })
    );
    assert_eq!(on.registrar_api_versions, ApiVersion::SUPPORTED.to_vec());
}

#[test]
fn secret_values_are_not_echoed() {
    let dir = Dir::new();
    let err = load(
        vec![dir.file("a.conf", &base(&dir))],
        &[("tpm_ownerpassword", "hex:zz-secret")],
    )
    .expect_err("rejected");
    assert!(!err.to_string().contains("zz-secret"), "{err}");
    // A loaded config's Debug says which secrets are set, never what they are.
    let loaded = load(
        vec![dir.file("b.conf", &base(&dir))],
        &[
            ("tpm_ownerpassword", "owner-zz-secret"),
            ("server_key_password", "server-zz-secret"),
            ("payload_key_password", "payload-zz-secret"),
        ],
    )
    .expect("loads");
    let shown = format!("{:?}", loaded.config);
    assert!(!shown.contains("zz-secret"), "{shown}");
    assert!(shown.contains("tpm_ownerpassword: <set>"), "{shown}");
    let tpm = format!("{:?}", loaded.config.tpm_config());
    assert!(!tpm.contains("zz-secret"), "{tpm}");
}

#[test]
fn a_toml_syntax_error_names_file_line_and_key_never_the_value() {
    let dir = Dir::new();
    let file = dir.file(
        "a.conf",
        "[agent]\nuuid = \"x\"\ntpm_ownerpassword = \"hunter2-zz-secret\nport = 3\n",
    );
    let err = load(vec![file.clone()], &[])
        .expect_err("syntax")
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(
        err.contains("line 3") && err.contains("key tpm_ownerpassword"),
        "{err}"
    );
}

#[test]
fn missing_named_file_is_an_error() {
    let err = load(vec!["/nonexistent/agent.conf".into()], &[]).expect_err("rejected");
    assert!(err.to_string().contains("/nonexistent/agent.conf"));
}

#[test]
fn unknown_and_unused_keys_warn_without_failing() {
    let dir = Dir::new();
    let body = format!(
        "{}frobnicate = 1\nsecure_size = \"1m\"\niak_idevid_name_alg = \"sha384\"\n",
        base(&dir)
    );
    let loaded = load(vec![dir.file("a.conf", &body)], &[("bogus", "x")]).expect("load");
    let all = loaded.warnings.join("\n");
    assert!(all.contains("\"frobnicate\""), "{all}");
    assert!(
        all.contains("\"bogus\"") && all.contains("environment"),
        "{all}"
    );
    assert!(all.contains("iak_idevid_name_alg"), "{all}");
    assert!(
        !all.contains("secure_size"),
        "a default value must stay silent: {all}"
    );
}

#[test]
fn mtls_off_does_not_need_a_client_ca() {
    let dir = Dir::new();
    let body = format!(
        "[agent]\nkeylime_dir = {:?}\nenable_agent_mtls = false\n",
        dir.0.path().display().to_string()
    );
    let c = load(vec![dir.file("a.conf", &body)], &[])
        .expect("load")
        .config;
    assert!(!c.enable_agent_mtls);
}

#[test]
fn api_version_subsets() {
    assert_eq!(api_versions("latest"), Ok(vec![ApiVersion::new(2, 6)]));
    assert_eq!(
        api_versions("2.6, 2.5,2.5"),
        Ok(vec![ApiVersion::new(2, 5), ApiVersion::new(2, 6)])
    );
    assert!(api_versions("1.0").is_err());
}

#[test]
fn documented_config_file_equals_built_in_defaults() {
    // At run time: a build shared by two clones must read this clone's file.
    let repo = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let shipped = repo.join("keylime-agent.conf");
    let mtls_off = [("enable_agent_mtls", "false")];
    let from_file = load(vec![shipped], &mtls_off).expect("shipped config loads");
    assert!(from_file.warnings.is_empty(), "{:?}", from_file.warnings);
    let built_in = load(vec![], &mtls_off).expect("defaults");
    assert_eq!(
        format!("{:?}", from_file.config),
        format!("{:?}", built_in.config)
    );
}
