//! Dropping root: after the TPM, the secure tmpfs and the listening socket
//! are set up, the agent switches to `run_as` (user, group, and the user's
//! supplementary groups) for good. Nothing is chowned at the switch: the
//! two directories the agent writes afterwards (the secure directory and
//! the revocation records) were made for that user when the state
//! directory was laid out; everything else stays root's. Started
//! unprivileged, the agent simply stays who it is.

use std::ffi::CString;

use nix::unistd::{getuid, initgroups, setgid, setuid, Gid, Group, Uid, User};
use thiserror::Error;

use crate::config::RunAs;
use crate::secure_fs;

/// Why the switch failed; the agent stops rather than run as root by mistake.
#[derive(Debug, Error)]
pub enum PrivilegeError {
    /// The user or group does not exist.
    #[error("run_as: no {kind} named {name:?}")]
    Unknown {
        /// "user" or "group".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A system call failed.
    #[error("run_as: {what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
}

/// The account `run_as` names, looked up once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name.
    pub name: String,
    /// The group as configured (`None`: the user's primary group).
    pub group: Option<String>,
    /// The user.
    pub uid: Uid,
    /// The group the agent runs with.
    pub gid: Gid,
}

impl Identity {
    /// The owner of what this identity writes after the switch.
    pub fn owner(&self) -> secure_fs::Owner {
        secure_fs::Owner {
            uid: self.uid,
            gid: self.gid,
        }
    }
}

/// Looks up the user and group `run_as` names.
pub fn resolve(run_as: &RunAs) -> Result<Identity, PrivilegeError> {
    let sys = |what| move |source| PrivilegeError::Sys { what, source };
    let user = User::from_name(&run_as.user)
        .map_err(sys("looking up the user"))?
        .ok_or_else(|| PrivilegeError::Unknown {
            kind: "user",
            name: run_as.user.clone(),
        })?;
    let gid = match &run_as.group {
        Some(name) => {
            Group::from_name(name)
                .map_err(sys("looking up the group"))?
                .ok_or_else(|| PrivilegeError::Unknown {
                    kind: "group",
                    name: name.clone(),
                })?
                .gid
        }
        None => user.gid,
    };
    Ok(Identity {
        name: user.name,
        group: run_as.group.clone(),
        uid: user.uid,
        gid,
    })
}

/// Whether the switch will happen: the agent runs as root. Started as
/// another user, it stays who it is.
pub fn will_switch() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Switches to `identity` (user, group, and the user's supplementary
/// groups) for good. Nothing is handed over here: what the identity must
/// write was created for it when the state directory was laid out.
pub fn drop_to(identity: &Identity) -> Result<(), PrivilegeError> {
    let sys = |what| move |source| PrivilegeError::Sys { what, source };
    if !will_switch() {
        if getuid() != identity.uid {
            tracing::warn!(
                "run_as = {}: the agent was not started as root, so it keeps running as uid {}",
                identity.name,
                getuid()
            );
        }
        return Ok(());
    }
    let name = CString::new(identity.name.clone()).map_err(|_| PrivilegeError::Unknown {
        kind: "user",
        name: identity.name.clone(),
    })?;
    initgroups(&name, identity.gid).map_err(sys("setting supplementary groups"))?;
    setgid(identity.gid).map_err(sys("setgid"))?;
    setuid(identity.uid).map_err(sys("setuid"))?;
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::Sys {
            what: "root could be regained after the switch",
            source: nix::Error::EPERM,
        });
    }
    // Changing credentials already clears it; kept explicit, since the
    // process holds K and the NK in memory.
    let _ = nix::sys::prctl::set_dumpable(false);
    tracing::info!(
        "now running as {}:{} (uid {}, gid {})",
        identity.name,
        identity.group.as_deref().unwrap_or("(primary group)"),
        identity.uid,
        identity.gid
    );
    Ok(())
}

/// Makes the process hold its secrets close, first thing in both binaries:
/// not dumpable (no core file, no ptrace by the same user, `/proc/PID`
/// owned by root) and no core files (`RLIMIT_CORE` 0, inherited by every
/// payload script and revocation action).
pub fn harden_process() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!("PR_SET_DUMPABLE 0: {e}");
    }
    if let Err(e) = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!("RLIMIT_CORE 0: {e}");
    }
}
