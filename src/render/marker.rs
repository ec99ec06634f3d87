//! The hidden markers that tie an advisory (and each follow-up section) to its report:
//! `<!-- advisory-bridge report-id=<id> mac=<tag> -->`. The tag is an HMAC-SHA256 of the
//! id under a key kept in the state directory, so no report text can produce a marker
//! that counts, whatever the renderer lets through.
//!
//! Markers written before keys existed (`<!-- advisory-bridge report-id=<id> -->`) still
//! count, but only on advisories created before this installation started writing
//! authenticated ones ([`MarkerKey::with_legacy_before`]).

use std::path::Path;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::mail::ReportId;

/// Hex digits of the tag kept in a marker: 128 bits.
const TAG_HEX: usize = 32;

/// The key that authenticates our markers.
#[derive(Clone)]
pub struct MarkerKey {
    key: [u8; 32],
    legacy_before: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for MarkerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarkerKey")
            .field("key", &"[redacted]")
            .field("legacy_before", &self.legacy_before)
            .finish()
    }
}

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("marker key {path}: {message}")]
pub struct MarkerKeyError {
    /// The key file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// One report's markers as a search for its advisory sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerQuery {
    /// The report.
    pub id: ReportId,
    current: String,
    legacy: String,
    legacy_before: Option<DateTime<Utc>>,
}

impl MarkerQuery {
    /// True when `description` carries this report's marker: the authenticated one, or
    /// a legacy one on an advisory created before authenticated markers were written.
    pub fn matches(&self, description: &str, created_at: Option<DateTime<Utc>>) -> bool {
        description.contains(&self.current)
            || (legacy_counts(self.legacy_before, created_at) && description.contains(&self.legacy))
    }
}

/// True when untagged markers count on an advisory created at `created_at`: only
/// before `cutoff`, the time authenticated markers started being written.
fn legacy_counts(cutoff: Option<DateTime<Utc>>, created_at: Option<DateTime<Utc>>) -> bool {
    matches!((cutoff, created_at), (Some(cutoff), Some(created)) if created < cutoff)
}

/// The report markers in `description`, each as its report id and what follows the id
/// (` mac=<tag> -->` or, for a legacy marker, ` -->`).
fn report_markers(description: &str) -> impl Iterator<Item = (ReportId, &str)> {
    const OPEN: &str = "<!-- advisory-bridge report-id=";
    let mut rest = description;
    std::iter::from_fn(move || {
        let at = rest.find(OPEN)?;
        rest = &rest[at + OPEN.len()..];
        let end = rest.find(' ')?;
        Some((ReportId(rest[..end].to_owned()), &rest[end..]))
    })
}

impl MarkerKey {
    /// A key from its bytes; legacy markers do not count.
    pub const fn new(key: [u8; 32]) -> MarkerKey {
        MarkerKey {
            key,
            legacy_before: None,
        }
    }

    /// Lets legacy markers count on advisories created before `cutoff`.
    pub fn with_legacy_before(mut self, cutoff: Option<DateTime<Utc>>) -> MarkerKey {
        self.legacy_before = cutoff;
        self
    }

    /// Reads the key from `path` (64 hex digits), creating it with a fresh random key
    /// (mode 0600) when `create` is true and the file does not exist.
    pub fn load(path: &Path, create: bool) -> Result<MarkerKey, MarkerKeyError> {
        let fail = |message: String| MarkerKeyError {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .map_err(|e| fail(format!("is not hex ({e}); it holds 64 hex digits")))?;
                let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                    fail(format!("holds {} bytes; it must hold 32 (64 hex digits)", b.len()))
                })?;
                Ok(MarkerKey::new(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key: [u8; 32] = rand::random();
                crate::spool::write_durably(path, format!("{}\n", hex::encode(key)).as_bytes())
                    .map_err(|e| fail(e.to_string()))?;
                tracing::info!(path = %path.display(), "created the key that authenticates advisory markers; keep it with the state directory");
                Ok(MarkerKey::new(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(fail(
                "does not exist; create it with `openssl rand -hex 32 > FILE` (the same file on every instance that shares the mailbox), or leave advisory.marker_key_file unset to keep one in the state directory".into(),
            )),
            Err(e) => Err(fail(format!("cannot read it: {e}"))),
        }
    }

    fn tag(&self, kind: &str, id: &ReportId) -> String {
        let mut mac =
            <Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(kind.as_bytes());
        mac.update(b":");
        mac.update(id.0.as_bytes());
        let tag = hex::encode(mac.finalize().into_bytes());
        tag[..TAG_HEX].to_owned()
    }

    /// The marker that names `id`'s report in its advisory.
    pub fn report(&self, id: &ReportId) -> String {
        format!(
            "<!-- advisory-bridge report-id={id} mac={} -->",
            self.tag("report", id)
        )
    }

    /// The branch of the attachments repository that holds `id`'s attachments:
    /// `reports/` and a keyed digest of the id, so the name tells nothing about the
    /// report and cannot be guessed from it without the key.
    pub fn attachments_branch(&self, id: &ReportId) -> String {
        format!("reports/{}", self.tag("attachments", id))
    }

    /// The marker that ends the section a follow-up `id` added to a description.
    pub fn followup(&self, id: &ReportId) -> String {
        format!(
            "<!-- advisory-bridge followup-id={id} mac={} -->",
            self.tag("followup", id)
        )
    }

    /// What finds `id`'s advisory.
    pub fn query(&self, id: &ReportId) -> MarkerQuery {
        MarkerQuery {
            id: id.clone(),
            current: self.report(id),
            legacy: format!("<!-- advisory-bridge report-id={id} -->"),
            legacy_before: self.legacy_before,
        }
    }

    /// True when `description` already holds follow-up `id`'s section (authenticated,
    /// or in the legacy form written before keys existed).
    pub fn has_followup(&self, description: &str, id: &ReportId) -> bool {
        description.contains(&self.followup(id))
            || description.contains(&format!("<!-- advisory-bridge followup-id={id} -->"))
    }

    /// Every report whose marker counts on an advisory created at `created_at` with
    /// this `description`: authenticated ones, and legacy ones on advisories older than
    /// the cutoff. What thread recovery and the watcher's adoption read.
    pub fn claimed(&self, description: &str, created_at: Option<DateTime<Utc>>) -> Vec<ReportId> {
        self.markers(description, legacy_counts(self.legacy_before, created_at))
    }

    /// Every report whose authenticated marker `description` carries.
    pub fn reports_in(&self, description: &str) -> Vec<ReportId> {
        self.markers(description, false)
    }

    /// The reports whose markers count in `description`, each once: authenticated
    /// ones, and untagged ones too when `legacy` is true.
    fn markers(&self, description: &str, legacy: bool) -> Vec<ReportId> {
        let mut found = Vec::new();
        for (id, tail) in report_markers(description) {
            let counts = tail.starts_with(&format!(" mac={} -->", self.tag("report", &id)))
                || (legacy && tail.starts_with(" -->"));
            if counts && !found.contains(&id) {
                found.push(id);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: MarkerKey = MarkerKey::new([9; 32]);

    fn id() -> ReportId {
        ReportId("ab".repeat(32))
    }

    #[test]
    fn only_the_key_makes_a_marker_that_counts() {
        let real = KEY.report(&id());
        let forged_with_other_key = MarkerKey::new([1; 32]).report(&id());
        let q = KEY.query(&id());
        assert!(q.matches(&format!("text\n{real}\n"), None));
        assert!(!q.matches(&forged_with_other_key, None));
        assert!(!q.matches("<!-- advisory-bridge report-id=abab -->", None));
        assert_eq!(
            KEY.reports_in(&format!("x {forged_with_other_key} {real}")),
            vec![id()]
        );
    }

    #[test]
    fn legacy_markers_count_only_on_advisories_older_than_the_cutoff() {
        let cutoff = Utc::now();
        let q = KEY.clone().with_legacy_before(Some(cutoff)).query(&id());
        let legacy = format!("<!-- advisory-bridge report-id={} -->", id());
        let before = cutoff - chrono::Duration::days(3);
        let after = cutoff + chrono::Duration::seconds(1);
        assert!(q.matches(&legacy, Some(before)));
        assert!(!q.matches(&legacy, Some(after)));
        assert!(!q.matches(&legacy, None));
    }

    #[test]
    fn a_key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marker.key");
        assert!(MarkerKey::load(&path, false).is_err());
        let a = MarkerKey::load(&path, true).unwrap();
        let b = MarkerKey::load(&path, true).unwrap();
        assert_eq!(a.report(&id()), b.report(&id()));
        std::fs::write(&path, "zz").unwrap();
        let e = MarkerKey::load(&path, true).unwrap_err().to_string();
        assert!(e.contains("not hex"), "{e}");
    }
}
