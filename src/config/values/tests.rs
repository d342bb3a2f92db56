//! Unit tests of `values`.

use super::*;

#[test]
fn ports() {
    assert_eq!(port("9002"), Ok(9002));
    for bad in ["0", "65536", "-1", "http", "", "90.2"] {
        assert!(port(bad).is_err(), "{bad}");
    }
}

#[test]
fn sizes_and_counts() {
    assert_eq!(byte_size("8m"), Ok(8 << 20));
    assert_eq!(byte_size("512k"), Ok(512 << 10));
    assert_eq!(byte_size("1000"), Ok(1000));
    assert_eq!(byte_size("1G"), Ok(1 << 30));
    for bad in ["", "0", "2g", "m", "1.5m", "-1k", "8 m"] {
        assert!(byte_size(bad).is_err(), "{bad}");
    }
    assert_eq!(connection_count("512"), Ok(512));
    for bad in ["0", "70000", "many"] {
        assert!(connection_count(bad).is_err(), "{bad}");
    }
}

#[test]
fn https_urls() {
    assert_eq!(https_url(""), Ok(None));
    assert_eq!(
        https_url("https://127.0.0.1:8881/"),
        Ok(Some("https://127.0.0.1:8881".into()))
    );
    assert_eq!(
        https_url("https://[::1]:8881"),
        Ok(Some("https://[::1]:8881".into()))
    );
    assert_eq!(
        https_url("https://verifier.example"),
        Ok(Some("https://verifier.example".into()))
    );
    for bad in [
        "http://127.0.0.1:8881",
        "127.0.0.1:8881",
        "https://",
        "https://host:99999",
        "https://host/v3.0",
        "https://user@host",
    ] {
        assert!(https_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn hosts() {
    assert_eq!(host("127.0.0.1").as_deref(), Ok("127.0.0.1"));
    assert_eq!(host("[::1]").as_deref(), Ok("::1"));
    assert_eq!(
        host("node-1.example.org.").as_deref(),
        Ok("node-1.example.org")
    );
    for bad in ["", "a b", "-x.org", "x..org", "300.1.1.1.1/8", "ho$t"] {
        assert!(host(bad).is_err(), "{bad}");
    }
}

#[test]
fn ek_handles() {
    assert_eq!(ek_handle("generate"), Ok(None));
    assert_eq!(ek_handle(""), Ok(None));
    assert_eq!(ek_handle("0x81010001"), Ok(Some(0x8101_0001)));
    assert_eq!(ek_handle("81000000"), Ok(Some(0x8100_0000)));
    for bad in ["0x01c00002", "0x82000000", "0xzz", "persistent", "0x"] {
        assert!(ek_handle(bad).is_err(), "{bad}");
    }
}

#[test]
fn tpm_auth_values() {
    assert_eq!(tpm_auth("secret"), Ok(b"secret".to_vec()));
    assert_eq!(tpm_auth("hex:00ff"), Ok(vec![0, 255]));
    assert_eq!(tpm_auth(""), Ok(vec![]));
    assert!(tpm_auth("hex:0").is_err());
    assert!(tpm_auth("hex:zz").is_err());
}

#[test]
fn lists_in_every_upstream_spelling() {
    assert_eq!(list("[]"), Vec::<String>::new());
    assert_eq!(list("a, b"), vec!["a", "b"]);
    assert_eq!(list("['a.py', \"b\"]"), vec!["a.py", "b"]);
}

#[test]
fn client_ranges() {
    let ranges = client_cidrs("127.0.0.1/32, 10.0.0.0/8, ::1").expect("parse");
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
    assert!(ranges[0].contains(ip("127.0.0.1")));
    assert!(!ranges[0].contains(ip("127.0.0.2")));
    assert!(ranges[1].contains(ip("10.200.0.1")));
    assert!(ranges[1].contains(ip("::ffff:10.1.2.3")), "mapped IPv4");
    assert!(ranges[2].contains(ip("::1")));
    assert!(!ranges[2].contains(ip("127.0.0.1")));
    assert!(client_cidrs("0.0.0.0/0").expect("any")[0].contains(ip("192.0.2.1")));
    assert_eq!(client_cidrs(""), Ok(vec![]));
    assert!(client_cidrs("127.0.0.1/33").is_err());
    assert!(client_cidrs("localhost").is_err());
}

#[test]
fn run_as_forms() {
    assert_eq!(run_as(""), Ok(None));
    let both = run_as("keylime:tss").ok().flatten();
    assert_eq!(
        both.map(|r| (r.user, r.group)),
        Some(("keylime".into(), Some("tss".into())))
    );
    assert!(run_as("a:b:c").is_err());
    assert!(run_as(":tss").is_err());
}

#[test]
fn file_names_and_sizes() {
    assert_eq!(file_name("autorun.sh").as_deref(), Ok("autorun.sh"));
    for bad in ["", "..", "a/b", "/etc/passwd"] {
        assert!(file_name(bad).is_err(), "{bad}");
    }
    for good in ["1m", "512k", "2G", "10%", "4096"] {
        assert!(tmpfs_size(good).is_ok(), "{good}");
    }
    for bad in ["", "m", "1mb", "-1m", "0", "1 m"] {
        assert!(tmpfs_size(bad).is_err(), "{bad}");
    }
    assert!(seconds("0").is_err());
    assert_eq!(seconds("5"), Ok(Duration::from_secs(5)));
}

#[test]
fn numbers() {
    assert_eq!(retry_count("forever"), Ok(None));
    assert_eq!(retry_count("3"), Ok(Some(3)));
    assert!(retry_count("-1").is_err());
    assert_eq!(millis("1500"), Ok(Duration::from_millis(1500)));
    assert!(millis("1.5").is_err());
    assert_eq!(fraction("0.25"), Ok(0.25));
    assert!(fraction("1.5").is_err());
    assert_eq!(boolean("True"), Ok(true));
    assert!(boolean("maybe").is_err());
}
