//! Durable local storage of raw messages and kept attachments, under the state directory.
//!
//! A message's raw bytes are written here before anything else happens to it, and made
//! durable ([`Spool::sync`]) before anything leaves the machine for it (the create) and
//! before the message leaves this instance's claim folder, so a mailbox accident cannot
//! lose a report once the daemon has seen it. Until then the message is still on the
//! server, so a power cut costs a rewrite at most. Files are content-addressed or carry
//! generated names: nothing from a message is used as a path.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::mail::ReportId;

/// A failed write to the state directory. Not retried per message: a full or read-only
/// disk needs a person, so the daemon stops with this error.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}; check that the state directory is writable and not full")]
pub struct SpoolError {
    /// The file or folder.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// The spool: `state_dir/spool/` for raw messages, `state_dir/attachments/<report id>/`
/// for kept attachments.
#[derive(Debug, Clone)]
pub struct Spool {
    messages: PathBuf,
    attachments: PathBuf,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_owned(),
        source,
    }
}

/// Creates a folder (and parents) readable only by us.
fn private_dir(path: &Path) -> Result<(), SpoolError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(err(path))
}

/// Writes `data` to `path` atomically and durably: a temporary file in the same folder,
/// fsync, rename, fsync of the folder. An existing file with that name and length is
/// kept as is (names are content-derived, so it holds the same bytes).
pub fn write_durably(path: &Path, data: &[u8]) -> Result<(), SpoolError> {
    write_file(path, data, true)
}

/// [`write_durably`] without the fsyncs: atomic (a reader sees all or nothing), durable
/// only at the next [`Spool::sync`]. A file a power cut left short is written again.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), SpoolError> {
    write_file(path, data, false)
}

fn write_file(path: &Path, data: &[u8], sync: bool) -> Result<(), SpoolError> {
    use std::os::unix::fs::OpenOptionsExt;
    if fs::metadata(path).is_ok_and(|m| m.len() == data.len() as u64) {
        return Ok(());
    }
    let dir = path
        .parent()
        .expect("spool paths are always inside a spool folder");
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err(&tmp))?;
        f.write_all(data).map_err(err(&tmp))?;
        if sync {
            f.sync_all().map_err(err(&tmp))?;
        }
        fs::rename(&tmp, path).map_err(err(path))?;
        if sync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err(dir))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// [`Spool::sync`] for the file system that holds `path` (any folder of the state
/// directory).
pub fn sync_state(path: &Path) -> Result<(), SpoolError> {
    let dir = File::open(path).map_err(err(path))?;
    rustix::fs::syncfs(&dir).map_err(|e| err(path)(std::io::Error::from(e)))
}

impl Spool {
    /// Opens (creating) the spool folders under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Spool, SpoolError> {
        let spool = Spool {
            messages: state_dir.join("spool"),
            attachments: state_dir.join("attachments"),
        };
        private_dir(state_dir)?;
        private_dir(&spool.messages)?;
        private_dir(&spool.attachments)?;
        Ok(spool)
    }

    /// Makes everything written to the state directory so far durable, the journal
    /// included (it lives there too): one `syncfs(2)` for the file system, instead of
    /// an fsync per file and folder. Callers batch: once before a create, once before a
    /// batch of messages leaves the claim folder.
    pub fn sync(&self) -> Result<(), SpoolError> {
        sync_state(&self.messages)
    }

    /// Stores a raw message under the SHA-256 of its bytes and returns the path.
    pub fn store_message(&self, raw: &[u8]) -> Result<PathBuf, SpoolError> {
        let name = format!("{}.eml", hex::encode(Sha256::digest(raw)));
        let path = self.messages.join(name);
        write_atomically(&path, raw)?;
        Ok(path)
    }

    /// Stores an attachment of a report under a generated name (from the renderer) and
    /// returns the path.
    pub fn store_attachment(
        &self,
        report: &ReportId,
        file_name: &str,
        data: &[u8],
    ) -> Result<PathBuf, SpoolError> {
        // Both parts are generated by us; refuse anything that could leave the folder
        // rather than trusting that forever.
        let safe = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        assert!(
            safe(&report.0) && safe(file_name),
            "attachment names are generated by the renderer and are always safe"
        );
        let dir = self.attachments.join(&report.0);
        private_dir(&dir)?;
        let path = dir.join(file_name);
        write_atomically(&path, data)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_stored_under_its_hash_and_storing_it_again_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let a = spool.store_message(b"Subject: x\r\n\r\nbody").unwrap();
        let b = spool.store_message(b"Subject: x\r\n\r\nbody").unwrap();
        assert_eq!(a, b);
        assert_eq!(fs::read(&a).unwrap(), b"Subject: x\r\n\r\nbody");
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("spool"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn attachments_are_kept_per_report_with_private_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let id = ReportId("ab12".into());
        let p = spool
            .store_attachment(&id, "0-deadbeef.bin", b"\x00\x01")
            .unwrap();
        assert_eq!(p, dir.path().join("attachments/ab12/0-deadbeef.bin"));
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
