//! FAKE peers, for faults the real registrar and verifier cannot be made
//! to produce on demand (300 MB answers, forged error text, chosen status
//! codes): an HTTP(S) server on 127.0.0.1 that answers each request with a
//! script and records the request lines and when they came.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};

/// How a fake peer answers one request: given the request line, write the
/// whole answer.
pub type Answer = Arc<dyn Fn(&str, &mut dyn Write) -> std::io::Result<()> + Send + Sync>;

/// Connections a fake peer accepts before it stops listening.
const FAKE_CONNECTIONS: usize = 200;

/// A FAKE HTTP(S) peer on 127.0.0.1: one request per connection, answered
/// by `answer`, then closed; counts requests.
pub struct FakePeer {
    /// Where it listens.
    pub port: u16,
    requests: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakePeer {
    /// Listens on a free port; `tls` makes it HTTPS.
    pub fn start(tls: Option<SslAcceptor>, answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, seen, stop) = (requests.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut accepted = 0;
                while accepted < FAKE_CONNECTIONS && !stop.load(Ordering::SeqCst) {
                    let Ok((tcp, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    accepted += 1;
                    if tcp.set_nonblocking(false).is_err() {
                        continue;
                    }
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = tcp.set_write_timeout(Some(Duration::from_secs(10)));
                    match &tls {
                        Some(acceptor) => {
                            if let Ok(mut stream) = acceptor.accept(tcp) {
                                answer_one(&mut stream, &answer, &requests, &seen);
                                let _ = stream.shutdown();
                            }
                        }
                        None => {
                            let mut stream = tcp;
                            answer_one(&mut stream, &answer, &requests, &seen);
                        }
                    }
                }
            })
        };
        Self {
            port,
            requests,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The request lines so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen_at().into_iter().map(|(_, line)| line).collect()
    }

    /// The request lines so far, each with when it was read.
    pub fn seen_at(&self) -> Vec<(Instant, String)> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request (head, and a body of its Content-Length, bounded),
/// counts it, and answers it.
fn answer_one<S: Read + Write>(
    stream: &mut S,
    answer: &Answer,
    requests: &AtomicUsize,
    seen: &Mutex<Vec<(Instant, String)>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 1 << 20 {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let request = String::from_utf8_lossy(&head[..end]).to_string();
    let length = request
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut left = length.saturating_sub(head.len() - end).min(64 << 20);
    while left > 0 {
        match stream.read(&mut buf[..left.min(4096)]) {
            Ok(0) | Err(_) => break,
            Ok(n) => left -= n,
        }
    }
    let line = request.lines().next().unwrap_or_default().to_string();
    requests.fetch_add(1, Ordering::SeqCst);
    seen.lock()
        .expect("lock")
        .push((Instant::now(), line.clone()));
    let _ = answer(&line, stream);
    let _ = stream.flush();
}

/// The same answer to every request.
pub fn fixed_answer(
    status: &'static str,
    content_type: &'static str,
    body: &'static str,
) -> Answer {
    Arc::new(move |_: &str, w: &mut dyn Write| -> std::io::Result<()> {
        write!(
                w,
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
    })
}

/// A CA and a server certificate for IP address 127.0.0.1 it signed,
/// written to `dir`: (CA, certificate, key).
pub fn ip_server_identity(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::extension::{
        BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    };
    use openssl::x509::{X509NameBuilder, X509};
    let new_key = || -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve");
        PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey")
    };
    let name = |cn: &str| {
        let mut n = X509NameBuilder::new().expect("name");
        n.append_entry_by_nid(Nid::COMMONNAME, cn).expect("cn");
        n.build()
    };
    let serial = || {
        let mut bn = BigNum::new().expect("bignum");
        bn.rand(63, MsbOption::MAYBE_ZERO, false).expect("rand");
        bn.to_asn1_integer().expect("serial")
    };
    let (ca_key, server_key) = (new_key(), new_key());

    let mut ca = X509::builder().expect("builder");
    ca.set_version(2).expect("v3");
    ca.set_serial_number(&serial()).expect("serial");
    ca.set_subject_name(&name("fake verifier CA"))
        .expect("subject");
    ca.set_issuer_name(&name("fake verifier CA"))
        .expect("issuer");
    ca.set_pubkey(&ca_key).expect("pubkey");
    ca.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("not before");
    ca.set_not_after(&Asn1Time::days_from_now(2).expect("time"))
        .expect("not after");
    ca.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
        .expect("ext");
    ca.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .expect("ku"),
    )
    .expect("ext");
    ca.sign(&ca_key, MessageDigest::sha256()).expect("sign");
    let ca = ca.build();

    let mut leaf = X509::builder().expect("builder");
    leaf.set_version(2).expect("v3");
    leaf.set_serial_number(&serial()).expect("serial");
    leaf.set_subject_name(&name("127.0.0.1")).expect("subject");
    leaf.set_issuer_name(ca.subject_name()).expect("issuer");
    leaf.set_pubkey(&server_key).expect("pubkey");
    leaf.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("not before");
    leaf.set_not_after(&Asn1Time::days_from_now(2).expect("time"))
        .expect("not after");
    let issuer: &openssl::x509::X509Ref = &ca;
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&leaf.x509v3_context(Some(issuer), None))
        .expect("san");
    leaf.append_extension(san).expect("ext");
    leaf.append_extension(ExtendedKeyUsage::new().server_auth().build().expect("eku"))
        .expect("ext");
    leaf.sign(&ca_key, MessageDigest::sha256()).expect("sign");
    let leaf = leaf.build();

    let (ca_path, cert, key) = (
        dir.join("fake-verifier-ca.crt"),
        dir.join("fake-verifier.crt"),
        dir.join("fake-verifier.key"),
    );
    std::fs::write(&ca_path, ca.to_pem().expect("pem")).expect("write");
    std::fs::write(&cert, leaf.to_pem().expect("pem")).expect("write");
    std::fs::write(&key, server_key.private_key_to_pem_pkcs8().expect("pem")).expect("write");
    (ca_path, cert, key)
}

/// A TLS acceptor with this certificate and key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> SslAcceptor {
    let mut builder =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("acceptor");
    builder
        .set_private_key_file(key, SslFiletype::PEM)
        .expect("key");
    builder.set_certificate_chain_file(cert).expect("cert");
    builder.check_private_key().expect("matching key");
    builder.build()
}
