//! Certificates and keys: test CAs with client and server certificates, and
//! checking a quote's signature with the AK the agent persisted.

use super::*;

/// Client-side TLS material for talking to an agent.
pub struct Client {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test CA and a client certificate it signed, written to `dir`.
pub fn make_ca_and_client(dir: &Path, name: &str) -> (PathBuf, Client) {
    make_ca_and_leaf(dir, name, "client", None)
}

/// A test CA and a server certificate it signed for DNS name `host`, written
/// to `dir`; the `Client` holds the server's certificate and key.
pub fn make_ca_and_server(dir: &Path, host: &str) -> (PathBuf, Client) {
    make_ca_and_leaf(dir, host, host, Some(host))
}

pub fn make_ca_and_leaf(
    dir: &Path,
    name: &str,
    leaf_cn: &str,
    dns: Option<&str>,
) -> (PathBuf, Client) {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::BasicConstraints;
    use openssl::x509::{X509NameBuilder, X509};
    let key = || {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
        PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey")
    };
    let name_of = |cn: &str| {
        let mut n = X509NameBuilder::new().expect("name");
        n.append_entry_by_nid(Nid::COMMONNAME, cn).expect("cn");
        n.build()
    };
    let (ca_key, client_key) = (key(), key());
    let build = |subject: &str,
                 issuer: &str,
                 pubkey: &PKey<openssl::pkey::Private>,
                 signer: &PKey<openssl::pkey::Private>,
                 ca: bool,
                 dns: Option<&str>| {
        let mut b = X509::builder().expect("builder");
        b.set_version(2).expect("v3");
        let serial = openssl::bn::BigNum::from_u32(rand_u32())
            .and_then(|s| s.to_asn1_integer())
            .expect("serial");
        b.set_serial_number(&serial).expect("serial");
        b.set_subject_name(&name_of(subject)).expect("subject");
        b.set_issuer_name(&name_of(issuer)).expect("issuer");
        b.set_pubkey(pubkey).expect("pubkey");
        b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
            .expect("nb");
        b.set_not_after(&Asn1Time::days_from_now(2).expect("t"))
            .expect("na");
        if ca {
            b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
                .expect("ext");
        }
        if let Some(dns) = dns {
            let san = openssl::x509::extension::SubjectAlternativeName::new()
                .dns(dns)
                .build(&b.x509v3_context(None, None))
                .expect("san");
            b.append_extension(san).expect("ext");
        }
        b.sign(signer, MessageDigest::sha256()).expect("sign");
        b.build()
    };
    let ca = build(
        &format!("{name} CA"),
        &format!("{name} CA"),
        &ca_key,
        &ca_key,
        true,
        None,
    );
    let client = build(
        leaf_cn,
        &format!("{name} CA"),
        &client_key,
        &ca_key,
        false,
        dns,
    );
    let ca_path = dir.join(format!("{name}-ca.crt"));
    let cert = dir.join(format!("{name}-client.crt"));
    let key_path = dir.join(format!("{name}-client.key"));
    std::fs::write(&ca_path, ca.to_pem().expect("pem")).expect("write");
    std::fs::write(&cert, client.to_pem().expect("pem")).expect("write");
    std::fs::write(
        &key_path,
        client_key.private_key_to_pem_pkcs8().expect("pem"),
    )
    .expect("write");
    (
        ca_path,
        Client {
            cert,
            key: key_path,
        },
    )
}

pub fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).expect("rand");
    u32::from_le_bytes(b) | 1
}

/// The AK's public key, from the TPM2B_PUBLIC persisted in agent_data.json.
pub fn ak_public_key(dir: &std::path::Path) -> openssl::pkey::PKey<openssl::pkey::Public> {
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("agent_data.json")).expect("ak"))
            .expect("json");
    let ak_tpm = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        stored["public"].as_str().expect("public"),
    )
    .expect("b64");
    let public =
        <tss_esapi::structures::PublicBuffer as tss_esapi::traits::UnMarshall>::unmarshall(&ak_tpm)
            .and_then(tss_esapi::structures::Public::try_from)
            .expect("TPM2B_PUBLIC");
    let pem = keylime_agent::tpm::public_key_pem(&public).expect("pem");
    openssl::pkey::PKey::public_key_from_pem(pem.as_bytes()).expect("AK key")
}

/// Whether an RSASSA quote signature (TPMT_SIGNATURE) over `attest`
/// verifies with the AK persisted in `dir`.
pub fn signed_by_ak(dir: &Path, attest: &[u8], signature: &[u8]) -> bool {
    let ak = ak_public_key(dir);
    let mut verifier = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &ak)
        .expect("verifier");
    verifier.update(attest).expect("update");
    verifier.verify(&signature[6..]).expect("verify")
}
