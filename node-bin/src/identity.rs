//! The node's Ed25519 key: generated on first start, kept in `<rootdir>/key` (mode 0600), the
//! same peer ID on every later start.
//!
//! The file holds the key in libp2p's protobuf encoding ([`Keypair::to_protobuf_encoding`]),
//! so tools that read libp2p keys read it too. The same secret signs the node's blocks
//! ([`hypha_crdt::Author::signing`]), so a block's author is the node's peer key.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// The key file's name in the root directory.
pub(crate) const KEY_FILE: &str = "key";

/// Why the key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityError {
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file does not hold an Ed25519 key.
    #[error("key file {path} does not hold an Ed25519 libp2p key: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Loads the key from `rootdir`, or generates and saves one (mode 0600) if there is none.
/// Returns the key and whether it was just generated.
pub(crate) fn load_or_generate(rootdir: &Path) -> Result<(Keypair, bool), IdentityError> {
    let path = rootdir.join(KEY_FILE);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    match fs::read(&path) {
        Ok(bytes) => {
            let key =
                Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Invalid {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if key.clone().try_into_ed25519().is_err() {
                return Err(IdentityError::Invalid {
                    path,
                    reason: format!("it is a {:?} key", key.key_type()),
                });
            }
            Ok((key, false))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .expect("an Ed25519 key always encodes");
            // Write to a temporary file with the final mode, sync, then rename: a crash leaves
            // either no key or the whole key, never a truncated one.
            let tmp = rootdir.join(format!("{KEY_FILE}.tmp"));
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
            fs::rename(&tmp, &path).map_err(io)?;
            Ok((key, true))
        }
        Err(e) => Err(io(e)),
    }
}

/// The 32-byte Ed25519 secret of `key`, to sign blocks with.
pub(crate) fn secret(key: &Keypair) -> [u8; 32] {
    let ed = key
        .clone()
        .try_into_ed25519()
        .expect("load_or_generate only returns Ed25519 keys");
    let mut out = [0; 32];
    out.copy_from_slice(ed.secret().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (first, new) = load_or_generate(dir.path()).unwrap();
        assert!(new);
        let (again, new) = load_or_generate(dir.path()).unwrap();
        assert!(!new);
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
        assert_eq!(secret(&first), secret(&again));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn garbage_is_a_clear_error_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"not a key").unwrap();
        let err = load_or_generate(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not hold an Ed25519 libp2p key"),
            "{err}"
        );
        assert_eq!(fs::read(dir.path().join(KEY_FILE)).unwrap(), b"not a key");
    }
}
