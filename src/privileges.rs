//! Dropping root: after the TPM, the secure tmpfs and the listening socket
//! are set up, the agent switches to `run_as` (user, group, and the user's
//! supplementary groups) for good. The state it must keep writing is handed
//! to that user first. Started unprivileged, it simply stays who it is.

use std::ffi::CString;
use std::path::Path;

use nix::unistd::{chown, getuid, initgroups, setgid, setuid, Gid, Group, Uid, User};
use thiserror::Error;

use crate::config::RunAs;

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

/// Switches to `run_as`, first giving it `paths` (recursively).
pub fn drop_to(run_as: &RunAs, paths: &[&Path]) -> Result<(), PrivilegeError> {
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
    if !nix::unistd::geteuid().is_root() {
        if getuid() != user.uid {
            tracing::warn!(
                "run_as = {}: the agent was not started as root, so it keeps running as uid {}",
                run_as.user,
                getuid()
            );
        }
        return Ok(());
    }
    for path in paths {
        chown_tree(path, user.uid, gid).map_err(sys("handing the agent state to the user"))?;
    }
    let name = CString::new(user.name.clone()).map_err(|_| PrivilegeError::Unknown {
        kind: "user",
        name: user.name.clone(),
    })?;
    initgroups(&name, gid).map_err(sys("setting supplementary groups"))?;
    setgid(gid).map_err(sys("setgid"))?;
    setuid(user.uid).map_err(sys("setuid"))?;
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::Sys {
            what: "root could be regained after the switch",
            source: nix::Error::EPERM,
        });
    }
    tracing::info!(
        "now running as {}:{} (uid {}, gid {})",
        user.name,
        run_as.group.as_deref().unwrap_or("(primary group)"),
        user.uid,
        gid
    );
    Ok(())
}

fn chown_tree(path: &Path, uid: Uid, gid: Gid) -> nix::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    chown(path, Some(uid), Some(gid))?;
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                chown_tree(&entry.path(), uid, gid)?;
            }
        }
    }
    Ok(())
}
