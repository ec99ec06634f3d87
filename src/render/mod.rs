//! Turn a report into the advisory GitHub receives ([`advisory`]) and the mail we send
//! ([`outgoing`]: acknowledgements, follow-up notes, [`notice`]s, all threaded and with
//! ids from [`message_id`]). Pure: nothing here does I/O.

mod advisory;
pub mod body;
mod followup;
pub mod maintainers;
pub mod markdown;
pub mod marker;
pub mod message_id;
pub mod notice;
pub mod outgoing;

pub use self::advisory::{
    AdvisoryContext, AdvisoryDraft, AttachmentUpload, AttachmentsTarget, DESCRIPTION_LIMIT,
    MAX_UPLOAD_BYTES, Package, SUMMARY_LIMIT, StoredAttachment, advisory, stored_name,
    strip_subject,
};
pub use self::followup::{FollowupContext, FollowupRender, append_followup};
pub use self::marker::{MarkerKey, MarkerQuery};
pub use self::outgoing::{
    AdvisoryRef, ReplyMessage, TemplateError, Templates, followup_reply, header_safe_id, reply,
    reply_inviting, unreadable_reply,
};

#[cfg(test)]
pub(crate) mod test_support {
    //! Fixtures for the renderers' unit tests.
    use crate::mail::{Limits, Report, parse};
    use crate::render::MarkerKey;

    /// The marker key of the renderers' unit tests.
    pub const TEST_KEY: MarkerKey = MarkerKey::new([7; 32]);

    const LIMITS: Limits = Limits {
        max_message_bytes: 1 << 22,
        max_parts: 64,
        max_depth: 8,
        max_attachments: 16,
    };

    /// A message from `tests/fixtures/`, parsed.
    pub fn fixture(name: &str) -> Report {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
        parse(&raw, &LIMITS).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}
