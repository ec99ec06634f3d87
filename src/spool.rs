//! Durable local storage of raw messages and kept attachments.
