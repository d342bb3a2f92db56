//! The agent id. Peers treat it as an opaque, case-sensitive string of
//! `[A-Za-z0-9_.-]`, at most 80 characters (the registrar's column size).

use std::fmt;
use std::path::Path;

use openssl::sha::sha256;

use super::error::IdentityError;
use crate::secure_fs;

/// How the operator asked for the id to be chosen (`uuid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentIdSource {
    /// A fixed UUID, used as written.
    Explicit(String),
    /// A random UUIDv4, generated once and persisted in `keylime_dir`.
    Generate,
    /// The lower-case hex SHA-256 of the EK public key as PEM.
    HashEk,
    /// The SMBIOS system UUID.
    Dmidecode,
    /// The host name.
    Hostname,
}

/// File in `keylime_dir` that keeps a generated id across restarts.
pub const GENERATED_ID_FILE: &str = "agent_uuid";
const DMI_UUID_PATH: &str = "/sys/class/dmi/id/product_uuid";
const HOSTNAME_PATH: &str = "/proc/sys/kernel/hostname";

impl AgentIdSource {
    /// What the `uuid` key accepts.
    pub const ACCEPTED: &'static str =
        "a UUID such as d432fbb3-d2f1-4a97-9ef7-75bd81c00000, or one of generate, hash_ek, dmidecode, hostname";

    /// Parses the `uuid` key; `None` for anything else than
    /// [`Self::ACCEPTED`]. Unlike upstream, a malformed UUID is an error,
    /// never silently replaced by a random one.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim() {
            "generate" => Some(Self::Generate),
            "hash_ek" => Some(Self::HashEk),
            "dmidecode" => Some(Self::Dmidecode),
            "hostname" => Some(Self::Hostname),
            s if s.len() == 36 && uuid::Uuid::try_parse(s).is_ok() => {
                Some(Self::Explicit(s.into()))
            }
            _ => None,
        }
    }

    /// Resolves the id. `ek_public_pem` is needed by `hash_ek` only.
    pub fn resolve(
        &self,
        keylime_dir: &Path,
        ek_public_pem: &str,
    ) -> Result<AgentId, IdentityError> {
        match self {
            Self::Explicit(id) => Ok(AgentId(id.clone())),
            Self::Generate => generated(&keylime_dir.join(GENERATED_ID_FILE)),
            Self::HashEk => Ok(AgentId(hex::encode(sha256(ek_public_pem.as_bytes())))),
            Self::Dmidecode => from_dmi(Path::new(DMI_UUID_PATH)),
            Self::Hostname => from_hostname(Path::new(HOSTNAME_PATH)),
        }
    }
}

/// A resolved agent id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentId(String);

impl AgentId {
    /// The id as the peers see it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the peers accept `s` as an id.
    pub fn is_valid(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 80
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn generated(file: &Path) -> Result<AgentId, IdentityError> {
    let io = |source| IdentityError::Io {
        what: "generated agent id",
        path: file.to_path_buf(),
        source,
    };
    let read = secure_fs::read_private(file)
        .map(|(bytes, _)| String::from_utf8_lossy(&bytes).into_owned());
    match read {
        Ok(s) if uuid::Uuid::try_parse(s.trim()).is_ok() => return Ok(AgentId(s.trim().into())),
        Ok(_) => {
            return Err(IdentityError::AgentId(format!(
                "{} does not hold a UUID; delete it to generate a new id",
                file.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let id = uuid::Uuid::new_v4().to_string();
    secure_fs::write_private(file, format!("{id}\n").as_bytes()).map_err(io)?;
    Ok(AgentId(id))
}

fn from_dmi(path: &Path) -> Result<AgentId, IdentityError> {
    let raw = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        what: "SMBIOS system UUID",
        path: path.to_path_buf(),
        source,
    })?;
    let id = raw.trim().to_ascii_lowercase();
    let digits: String = id.chars().filter(|c| *c != '-').collect();
    if uuid::Uuid::try_parse(&id).is_err()
        || digits.chars().all(|c| c == '0')
        || digits.chars().all(|c| c == 'f')
    {
        return Err(IdentityError::AgentId(format!(
            "the SMBIOS system UUID {id:?} is not a usable unique id; set uuid to a value or another mode"
        )));
    }
    Ok(AgentId(id))
}

fn from_hostname(path: &Path) -> Result<AgentId, IdentityError> {
    let raw = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        what: "host name",
        path: path.to_path_buf(),
        source,
    })?;
    let name = raw.trim();
    if AgentId::is_valid(name) && name != "localhost" {
        Ok(AgentId(name.into()))
    } else {
        Err(IdentityError::AgentId(format!(
            "host name {name:?} is not a usable id (needs 1-80 of [A-Za-z0-9_.-], not localhost)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes_and_uuids() {
        assert_eq!(
            AgentIdSource::parse("generate"),
            Some(AgentIdSource::Generate)
        );
        assert_eq!(AgentIdSource::parse("hash_ek"), Some(AgentIdSource::HashEk));
        let id = "D432FBB3-d2f1-4a97-9ef7-75bd81c00000";
        assert_eq!(
            AgentIdSource::parse(id),
            Some(AgentIdSource::Explicit(id.into()))
        );
        for bad in [
            "",
            "d432fbb3",
            "d432fbb3d2f14a979ef775bd81c00000",
            "{d432fbb3-d2f1-4a97-9ef7-75bd81c00000}",
            "environment",
        ] {
            assert!(AgentIdSource::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn generated_id_is_persisted_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = AgentIdSource::Generate
            .resolve(dir.path(), "")
            .expect("first");
        let second = AgentIdSource::Generate
            .resolve(dir.path(), "")
            .expect("second");
        assert_eq!(first, second);
        assert!(uuid::Uuid::try_parse(first.as_str()).is_ok());
        std::fs::write(dir.path().join(GENERATED_ID_FILE), "garbage").expect("write");
        assert!(AgentIdSource::Generate.resolve(dir.path(), "").is_err());
    }

    #[test]
    fn hash_ek_is_sha256_of_the_pem() {
        let id = AgentIdSource::HashEk
            .resolve(Path::new("/"), "abc")
            .expect("id");
        assert_eq!(
            id.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn dmi_rejects_placeholder_uuids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("uuid");
        for bad in [
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "junk",
        ] {
            std::fs::write(&file, format!("{bad}\n")).expect("write");
            assert!(from_dmi(&file).is_err(), "{bad}");
        }
        std::fs::write(&file, "4C4C4544-0042-3510-8051-B4C04F4E3232\n").expect("write");
        assert_eq!(
            from_dmi(&file).expect("ok").as_str(),
            "4c4c4544-0042-3510-8051-b4c04f4e3232"
        );
    }

    #[test]
    fn hostname_must_be_a_valid_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("h");
        std::fs::write(&file, "node-7.example\n").expect("write");
        assert_eq!(from_hostname(&file).expect("ok").as_str(), "node-7.example");
        std::fs::write(&file, "localhost\n").expect("write");
        assert!(from_hostname(&file).is_err());
    }
}
