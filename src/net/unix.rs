//! The admin Unix socket: binding it safely, and who is on the other end.
//!
//! The socket is created with mode 0660 inside a directory keygate owns (created 0750 when
//! missing), so no other user can reach it while its mode is being set. A socket file left by a
//! crash is replaced; one a live keygate still answers on is refused. Peers are identified with
//! `SO_PEERCRED` (uid, gid, pid) and their supplementary groups are read from `/proc`.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};

use crate::store::Actor;

/// Mode of the socket file: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;
/// Mode of a socket directory keygate creates.
pub const DIR_MODE: u32 = 0o750;

/// Binds the admin socket at `path`, replacing a stale socket file and refusing a live one.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "{} is in use by a running keygate; stop it first",
                            path.display()
                        ),
                    ));
                }
                Err(_) => std::fs::remove_file(path)?,
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    Ok(listener)
}

/// The credentials of a connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups, read from `/proc/PID/status` (empty when unreadable).
    pub groups: Vec<u32>,
}

impl Peer {
    pub fn of(stream: &UnixStream) -> io::Result<Peer> {
        let cred = stream.peer_cred()?;
        let pid = cred.pid();
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid,
            groups: pid.map(supplementary_groups).unwrap_or_default(),
        })
    }

    /// SPEC §3: uid 0, the server's own uid, or a listed uid or gid.
    pub fn is_allowed(&self, own_uid: u32, uids: &[u32], gids: &[u32]) -> bool {
        self.uid == 0
            || self.uid == own_uid
            || uids.contains(&self.uid)
            || gids.contains(&self.gid)
            || self.groups.iter().any(|g| gids.contains(g))
    }

    pub fn actor(&self) -> Actor {
        Actor {
            uid: self.uid,
            gid: self.gid,
            pid: self.pid,
        }
    }
}

fn supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: Vec<u32>) -> Peer {
        Peer {
            uid,
            gid,
            pid: None,
            groups,
        }
    }

    #[test]
    fn root_self_and_listed_peers_are_allowed() {
        assert!(peer(0, 0, vec![]).is_allowed(1000, &[], &[]));
        assert!(peer(1000, 5, vec![]).is_allowed(1000, &[], &[]));
        assert!(peer(1001, 5, vec![]).is_allowed(1000, &[1001], &[]));
        assert!(peer(1002, 7, vec![]).is_allowed(1000, &[], &[7]));
        assert!(peer(1003, 5, vec![9, 7]).is_allowed(1000, &[], &[7]));
        assert!(!peer(1004, 5, vec![9]).is_allowed(1000, &[1001], &[7]));
    }

    #[tokio::test]
    async fn the_socket_gets_its_mode_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/admin.sock");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, DIR_MODE);

        // Live: refused.
        let err = bind(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);

        // Stale (the listener is gone but the file stays, as after a crash): replaced.
        drop(listener);
        assert!(path.exists());
        let _again = bind(&path).unwrap();
    }

    #[tokio::test]
    async fn a_regular_file_in_the_way_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        std::fs::write(&path, "precious").unwrap();
        assert_eq!(
            bind(&path).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }

    #[tokio::test]
    async fn peer_credentials_are_those_of_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = bind(&path).unwrap();
        let client = UnixStream::connect(&path).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let peer = Peer::of(&server).unwrap();
        assert_eq!(peer.uid, rustix::process::getuid().as_raw());
        assert_eq!(peer.pid, Some(std::process::id() as i32));
        drop(client);
    }
}
