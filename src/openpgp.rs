//! OpenPGP for encrypted reports (`[pgp]`, rPGP): our key, decrypting RFC 3156 PGP/MIME
//! and inline-armoured messages before the normal parse, checking a signature against a
//! key the message carries, and encrypting replies to the reporter's key. Pure: bytes
//! and keys in, bytes out; nothing here logs, so no plaintext reaches a log.

use std::io::{BufReader, Cursor, Read};

use base64::Engine as _;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use pgp::composed::{
    ArmorOptions, Deserializable, Message, MessageBuilder, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{KeyDetails, Password};

use crate::config::Secret;

/// Our OpenPGP key pair: the secret key (unlocked with its passphrase) that decrypts
/// reports and signs replies. `Debug` never shows it.
pub struct Keys {
    secret: SignedSecretKey,
    password: Password,
    public: SignedPublicKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Reads an armoured secret key and proves it works: a short message encrypted to it
    /// must decrypt with `passphrase` (none for an unprotected key), so a wrong
    /// passphrase fails at start, never as a quarantined report.
    pub fn from_armored(armoured: &str, passphrase: Option<&Secret>) -> Result<Keys, String> {
        let (secret, _) = SignedSecretKey::from_string(armoured)
            .map_err(|e| format!("not an armoured OpenPGP secret key: {e}"))?;
        secret
            .verify_bindings()
            .map_err(|e| format!("the key's self-signatures do not verify: {e}"))?;
        let password = passphrase.map_or_else(Password::empty, |p| Password::from(p.expose()));
        let public = secret.to_public_key();
        if !public
            .public_subkeys
            .iter()
            .any(|s| s.algorithm().can_encrypt())
        {
            return Err(format!(
                "the key {} has no encryption subkey; add one with \
                 `gpg --quick-add-key {} cv25519 encr`",
                fingerprint_of(&public),
                fingerprint_of(&public)
            ));
        }
        let keys = Keys {
            secret,
            password,
            public,
        };
        let probe = keys
            .seal(b"probe", None, false)
            .map_err(|e| format!("the key cannot be used (wrong passphrase?): {e}"))?;
        let (mut msg, _) = Message::from_string(&probe).map_err(|e| e.to_string())?;
        msg = msg
            .decrypt(&keys.password, &keys.secret)
            .map_err(|e| format!("the key cannot decrypt (wrong passphrase?): {e}"))?;
        read_all(&mut msg, 1 << 10)?;
        Ok(keys)
    }

    /// The primary key's fingerprint, upper-case hex.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.public)
    }

    /// Our public key, armoured, for `pgp export` and the "could not read" reply.
    pub fn public_armored(&self) -> String {
        self.public
            .to_armored_string(ArmorOptions::default())
            .unwrap_or_default()
    }

    /// Encrypts `plain` to `recipient` (if given) and to ourselves, signed with our key;
    /// armoured.
    pub fn encrypt_to(
        &self,
        plain: &[u8],
        recipient: Option<&SignedPublicKey>,
    ) -> Result<String, String> {
        self.seal(plain, recipient, true)
    }

    fn seal(
        &self,
        plain: &[u8],
        recipient: Option<&SignedPublicKey>,
        sign: bool,
    ) -> Result<String, String> {
        let rng = rand_core_06::OsRng;
        let mut builder = MessageBuilder::from_bytes("", plain.to_vec())
            .seipd_v1(rng, SymmetricKeyAlgorithm::AES256);
        let mut any = false;
        for key in [Some(&self.public), recipient].into_iter().flatten() {
            for sub in key
                .public_subkeys
                .iter()
                .filter(|s| s.algorithm().can_encrypt())
            {
                builder
                    .encrypt_to_key(rng, sub)
                    .map_err(|e| format!("cannot encrypt to {}: {e}", fingerprint_of(key)))?;
                any = true;
            }
        }
        if !any {
            return Err("no encryption subkey".into());
        }
        if sign {
            builder.sign(
                &self.secret.primary_key,
                Password::from(self.password.read().as_slice()),
                HashAlgorithm::Sha256,
            );
        }
        builder
            .to_armored_string(rng, ArmorOptions::default())
            .map_err(|e| e.to_string())
    }
}

/// Where the reply to a message we could not decrypt says our key is: `key_url` with
/// the fingerprint, else the armoured key itself; empty without a key.
pub fn key_hint(keys: Option<&Keys>, key_url: Option<&str>) -> String {
    let Some(keys) = keys else {
        return String::new();
    };
    let fingerprint = keys.fingerprint();
    match key_url {
        Some(url) => format!("Our key (fingerprint {fingerprint}) is at {url}"),
        None => format!(
            "Our key (fingerprint {fingerprint}) follows:\n\n{}",
            keys.public_armored()
        ),
    }
}

/// Upper-case hex fingerprint of a key's primary key.
fn fingerprint_of(key: &SignedPublicKey) -> String {
    hex::encode_upper(key.fingerprint().as_bytes())
}

/// How an encrypted message was packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 3156 `multipart/encrypted` (or a client's rearranged version of it).
    PgpMime,
    /// An armoured `-----BEGIN PGP MESSAGE-----` block in the body.
    Inline,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::PgpMime => "PGP/MIME",
            Format::Inline => "inline PGP",
        })
    }
}

/// What an encrypted message's signature says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// Not signed.
    Unsigned,
    /// Signed, and the signature verifies with the key (this fingerprint) the message
    /// carries.
    Verified(String),
    /// Signed, but the message carries no key the signature verifies with.
    KeyUnknown,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signature::Unsigned => f.write_str("not signed"),
            // The key came with the message: the signature proves who holds that key,
            // not who the sender is.
            Signature::Verified(fp) => write!(
                f,
                "signed, verified with key {fp} (a key the message itself carries)"
            ),
            Signature::KeyUnknown => f.write_str("signed, key unknown"),
        }
    }
}

/// Whether a report came encrypted, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Encryption {
    /// Sent in the clear (or no `[pgp]` key is configured).
    #[default]
    Plain,
    /// Decrypted with our key.
    Decrypted {
        /// How it was packaged.
        format: Format,
        /// Its signature.
        signature: Signature,
    },
    /// Encrypted, but not readable with our key (another key, corrupt): quarantined.
    Unreadable {
        /// How it was packaged.
        format: Format,
        /// Why not, without any content.
        reason: String,
    },
}

/// What [`open`] made of a message.
#[derive(Debug)]
pub enum Opened {
    /// No PGP/MIME structure: parse the bytes as they are.
    NotPgpMime,
    /// Decrypted: the outer headers with the decrypted entity as the body.
    Decrypted {
        /// The rebuilt message.
        raw: Vec<u8>,
        /// Its signature.
        signature: Signature,
    },
    /// PGP/MIME that our key cannot open.
    Unreadable(String),
}

/// Opens a PGP/MIME message: `multipart/encrypted; protocol="application/pgp-encrypted"`,
/// Exchange's and ProtonMail Bridge's rearranged `multipart/mixed` (an empty text part,
/// the `Version: 1` part, the encrypted part), and the same wrapped in `multipart/mixed`
/// with a text part in front. Text a mail system appended after the armour (Google
/// Workspace's footer) is ignored. The decrypted entity, at most `max_bytes`, replaces
/// the body; the outer headers (From, Subject, Message-ID, Authentication-Results…) stay.
pub fn open(raw: &[u8], keys: &Keys, max_bytes: usize) -> Opened {
    let Some(encrypted) = pgp_mime_payload(raw) else {
        return Opened::NotPgpMime;
    };
    let outer_keys = autocrypt_keys(raw);
    let carried = |plain: &[u8]| {
        let mut found = outer_keys.clone();
        found.extend(keys_in_entity(plain));
        found
    };
    match decrypt(&encrypted, keys, max_bytes, carried) {
        Ok((entity, Signature::Unsigned)) => match signed_entity(&entity, &carried(&entity)) {
            // RFC 3156 6.1: signed, then encrypted; the signed part is the report.
            Some((content, signature)) => Opened::Decrypted {
                raw: rebuild(raw, &content),
                signature,
            },
            None => Opened::Decrypted {
                raw: rebuild(raw, &entity),
                signature: Signature::Unsigned,
            },
        },
        Ok((entity, signature)) => Opened::Decrypted {
            raw: rebuild(raw, &entity),
            signature,
        },
        Err(reason) => Opened::Unreadable(reason),
    }
}

/// A `multipart/signed; protocol="application/pgp-signature"` entity (RFC 3156 section
/// 5): its signed part's bytes and what the detached signature says of them, checked
/// against `keys`.
fn signed_entity(entity: &[u8], keys: &[SignedPublicKey]) -> Option<(Vec<u8>, Signature)> {
    let msg = std::panic::catch_unwind(|| MessageParser::default().parse(entity)).ok()??;
    let root = msg.parts.first()?;
    let ct = root.content_type()?;
    let is_signed = ct.ctype().eq_ignore_ascii_case("multipart")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("signed"));
    let PartType::Multipart(children) = &root.body else {
        return None;
    };
    if !is_signed || children.len() != 2 {
        return None;
    }
    let content = msg.parts.get(children[0] as usize)?;
    let signature = msg.parts.get(children[1] as usize)?;
    let start = content.raw_header_offset() as usize;
    let end = (content.raw_end_offset() as usize).min(entity.len());
    let signed = entity.get(start..end)?;
    let detached = armour_block(signature.contents(), "SIGNATURE").and_then(|block| {
        pgp::composed::DetachedSignature::from_armor_single(Cursor::new(block.to_vec()))
            .ok()
            .map(|(s, _)| s)
    });
    let verdict = match detached {
        None => Signature::KeyUnknown,
        Some(sig) => {
            // Signed as canonical text: CRLF line ends, without the line break that
            // belongs to the boundary after it.
            let canonical = crlf(signed);
            let candidates = [
                canonical
                    .strip_suffix(b"\r\n")
                    .unwrap_or(&canonical)
                    .to_vec(),
                canonical.clone(),
            ];
            keys.iter()
                .find(|k| {
                    candidates.iter().any(|data| {
                        sig.verify(&k.primary_key, data).is_ok()
                            || k.public_subkeys
                                .iter()
                                .any(|s| sig.verify(&s.key, data).is_ok())
                    })
                })
                .map_or(Signature::KeyUnknown, |k| {
                    Signature::Verified(fingerprint_of(k))
                })
        }
    };
    Some((signed.to_vec(), verdict))
}

/// `data` with every line break a CRLF.
fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// The encrypted payload of a PGP/MIME message, if `raw` is one.
fn pgp_mime_payload(raw: &[u8]) -> Option<Vec<u8>> {
    let msg = std::panic::catch_unwind(|| MessageParser::default().parse(raw)).ok()??;
    let mime = |id: u32| -> (String, Option<&mail_parser::MessagePart<'_>>) {
        let part = msg.parts.get(id as usize);
        let ct = part
            .and_then(|p| p.content_type())
            .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase())
            .unwrap_or_else(|| "text/plain".into());
        (ct, part)
    };
    let children = |id: u32| -> Vec<u32> {
        match msg.parts.get(id as usize).map(|p| &p.body) {
            Some(PartType::Multipart(c)) => c.clone(),
            _ => Vec::new(),
        }
    };
    let encrypted = |id: u32| -> Option<Vec<u8>> {
        let (ct, _) = mime(id);
        let kids = children(id);
        if ct != "multipart/encrypted" || kids.len() != 2 {
            return None;
        }
        let (c0, _) = mime(kids[0]);
        let (_, p1) = mime(kids[1]);
        (c0 == "application/pgp-encrypted").then(|| p1.map(|p| p.contents().to_vec()))?
    };
    if let Some(payload) = encrypted(0) {
        return Some(payload);
    }
    let (root, _) = mime(0);
    if root != "multipart/mixed" {
        return None;
    }
    let kids = children(0);
    let types: Vec<String> = kids.iter().map(|&k| mime(k).0).collect();
    match types.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        // Exchange, ProtonMail Bridge: the parts of multipart/encrypted, rearranged.
        [
            "text/plain",
            "application/pgp-encrypted",
            "application/octet-stream",
        ] => {
            let text = mime(kids[0]).1.map(|p| p.contents()).unwrap_or_default();
            text.iter()
                .all(u8::is_ascii_whitespace)
                .then(|| mime(kids[2]).1.map(|p| p.contents().to_vec()))?
        }
        // A gateway's note in front of the encrypted message.
        ["text/plain", "multipart/encrypted"] => encrypted(kids[1]),
        _ => None,
    }
}

/// Decrypts one OpenPGP message (armoured, with anything around the armour ignored, or
/// binary) with our key: the plaintext (at most `max_bytes`) and what its signature
/// says, checked against the keys `carried` finds for the plaintext.
fn decrypt(
    data: &[u8],
    keys: &Keys,
    max_bytes: usize,
    carried: impl FnOnce(&[u8]) -> Vec<SignedPublicKey>,
) -> Result<(Vec<u8>, Signature), String> {
    let parsed = match armour_block(data, "MESSAGE") {
        Some(block) => {
            Message::from_armor(BufReader::new(Cursor::new(block.to_vec()))).map(|(m, _)| m)
        }
        None => Message::from_bytes(BufReader::new(Cursor::new(data.to_vec()))),
    };
    let msg = parsed.map_err(|e| format!("not an OpenPGP message: {e}"))?;
    if !msg.is_encrypted() {
        return Err("the OpenPGP message is not encrypted".into());
    }
    let mut msg = msg
        .decrypt(&keys.password, &keys.secret)
        .map_err(|e| match e {
            pgp::errors::Error::MissingKey => {
                "it is not encrypted to our key (our key's fingerprint is ".to_owned()
                    + &keys.fingerprint()
                    + ")"
            }
            e => format!("it could not be decrypted with our key: {e}"),
        })?;
    for _ in 0..4 {
        if !msg.is_compressed() {
            break;
        }
        msg = msg
            .decompress()
            .map_err(|e| format!("its compressed data is corrupt: {e}"))?;
    }
    let plain = read_all(&mut msg, max_bytes)?;
    let signature = if msg.is_signed() {
        let keys = carried(&plain);
        keys.iter()
            .find_map(|k| {
                let by_primary = msg.verify(&k.primary_key).is_ok();
                let by_sub = k.public_subkeys.iter().any(|s| msg.verify(&s.key).is_ok());
                (by_primary || by_sub).then(|| fingerprint_of(k))
            })
            .map_or(Signature::KeyUnknown, Signature::Verified)
    } else {
        Signature::Unsigned
    };
    Ok((plain, signature))
}

/// Reads a decrypted message to its end (so its signature can be checked), refusing more
/// than `max_bytes`.
fn read_all(msg: &mut Message<'_>, max_bytes: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    msg.take(max_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("its encrypted data is corrupt: {e}"))?;
    if out.len() > max_bytes {
        return Err(format!(
            "it decrypts to more than limits.max_message_bytes = {max_bytes} bytes"
        ));
    }
    Ok(out)
}

/// The first `-----BEGIN PGP <kind>-----` … `-----END PGP <kind>-----` block in `data`.
fn armour_block<'a>(data: &'a [u8], kind: &str) -> Option<&'a [u8]> {
    let begin = format!("-----BEGIN PGP {kind}-----");
    let end = format!("-----END PGP {kind}-----");
    let start = find(data, begin.as_bytes())?;
    let stop = find(&data[start..], end.as_bytes())? + start + end.len();
    Some(&data[start..stop])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The outer headers of `raw` without its `Content-*` fields, followed by `entity` (a
/// MIME entity; bare text gets a `text/plain` header).
fn rebuild(raw: &[u8], entity: &[u8]) -> Vec<u8> {
    let end = header_end(raw);
    let mut out = Vec::with_capacity(end + entity.len() + 64);
    let mut keep = true;
    for line in raw[..end].split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            keep = !name.starts_with("content-");
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    if !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    if !looks_like_entity(entity) {
        out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n\r\n");
        out.extend_from_slice(entity);
        return out;
    }
    // Only the entity's own Content-* fields: the outer headers stay the only ones (a
    // protected `Subject` inside would otherwise compete with the outer one).
    let end = header_end(entity);
    keep = true;
    for line in entity[..end].split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            keep = name.starts_with("content-");
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&entity[end..]);
    out
}

/// Where the header block ends (the start of the blank line), or the whole input.
fn header_end(raw: &[u8]) -> usize {
    let mut at = 0;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            return at;
        }
        at += line.len();
    }
    raw.len()
}

/// Whether `data` starts with a MIME header field (`Name: value`).
fn looks_like_entity(data: &[u8]) -> bool {
    let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
    match first.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => first[..colon]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-'),
        _ => false,
    }
}

/// The keys in `Autocrypt:` headers of `raw` whose `addr` is the `From` address.
fn autocrypt_keys(raw: &[u8]) -> Vec<SignedPublicKey> {
    let Some(msg) = std::panic::catch_unwind(|| MessageParser::default().parse(raw))
        .ok()
        .flatten()
    else {
        return Vec::new();
    };
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_ascii_lowercase);
    msg.headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("autocrypt"))
        .filter_map(|h| {
            let value = &raw[h.offset_start() as usize..h.offset_end() as usize];
            autocrypt_key(&String::from_utf8_lossy(value), from.as_deref())
        })
        .collect()
}

/// The key of one `Autocrypt:` header value (`addr=…; [prefer-encrypt=…;] keydata=…`),
/// if its `addr` is `from`.
fn autocrypt_key(value: &str, from: Option<&str>) -> Option<SignedPublicKey> {
    let mut addr = None;
    let mut keydata = None;
    for attr in value.split(';') {
        let (k, v) = attr.split_once('=')?;
        match k.trim().to_ascii_lowercase().as_str() {
            "addr" => addr = Some(v.trim().to_ascii_lowercase()),
            "keydata" => keydata = Some(v),
            _ => {}
        }
    }
    if addr.as_deref() != from || from.is_none() {
        return None;
    }
    let b64: String = keydata?.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let key = SignedPublicKey::from_bytes(Cursor::new(bytes)).ok()?;
    key.verify_bindings().ok()?;
    Some(key)
}

/// The keys in `application/pgp-keys` parts (or any armoured public key block in an
/// attachment) of a MIME entity.
fn keys_in_entity(entity: &[u8]) -> Vec<SignedPublicKey> {
    let Some(msg) = std::panic::catch_unwind(|| MessageParser::default().parse(entity))
        .ok()
        .flatten()
    else {
        return Vec::new();
    };
    msg.parts
        .iter()
        .filter(|p| !matches!(p.body, PartType::Multipart(_)))
        .filter_map(|p| parse_public_key(p.contents()))
        .collect()
}

/// A public key from armoured bytes, if they hold one whose self-signatures verify.
pub fn parse_public_key(data: &[u8]) -> Option<SignedPublicKey> {
    let block = armour_block(data, "PUBLIC KEY BLOCK")?;
    let (key, _) = SignedPublicKey::from_armor_single(Cursor::new(block)).ok()?;
    key.verify_bindings().ok()?;
    Some(key)
}

/// The keys a message carries: `Autocrypt:` headers for the `From` address, then
/// attached public keys.
pub fn carried_keys(
    outer_raw: &[u8],
    attachments: &[crate::mail::Attachment],
) -> Vec<SignedPublicKey> {
    autocrypt_keys(outer_raw)
        .into_iter()
        .chain(attachments.iter().filter_map(|a| parse_public_key(&a.data)))
        .collect()
}

/// The key the sender offers for replies (the first [`carried_keys`] one that can
/// encrypt), armoured.
pub fn sender_key(outer_raw: &[u8], attachments: &[crate::mail::Attachment]) -> Option<String> {
    carried_keys(outer_raw, attachments)
        .into_iter()
        .find(|k| k.public_subkeys.iter().any(|s| s.algorithm().can_encrypt()))
        .and_then(|k| k.to_armored_string(ArmorOptions::default()).ok())
}

/// An encrypted attachment's name without its `.gpg`, `.pgp` or `.asc` suffix.
pub fn decrypted_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    for suffix in [".gpg", ".pgp", ".asc"] {
        if lower.ends_with(suffix) && name.len() > suffix.len() {
            return name[..name.len() - suffix.len()].to_owned();
        }
    }
    name.to_owned()
}

/// Decrypts inline-armoured blocks in a report's text, in place. `Ok(None)`: there were
/// none; `Ok(Some(signature))`: all decrypted (the first signature reported);
/// `Err(reason)`: one could not be.
pub fn open_inline(
    text: &mut String,
    keys: &Keys,
    max_bytes: usize,
    carried: &[SignedPublicKey],
) -> Result<Option<Signature>, String> {
    let mut signature = None;
    let mut rounds = 0;
    while let Some(block) = armour_block(text.as_bytes(), "MESSAGE") {
        rounds += 1;
        if rounds > 16 {
            return Err("more than 16 encrypted blocks".into());
        }
        let start = find(text.as_bytes(), block).unwrap_or_default();
        let len = block.len();
        let (plain, sig) = decrypt(block, keys, max_bytes, |_| carried.to_vec())?;
        let plain = String::from_utf8_lossy(&plain).replace("\r\n", "\n");
        text.replace_range(start..start + len, plain.trim_end());
        signature.get_or_insert(sig);
    }
    Ok(signature)
}

/// Decrypts an attachment that is itself an OpenPGP message (armoured, or a `.gpg` /
/// `.pgp` file): the plaintext, or `None` when it is not one or not for our key.
pub fn open_attachment(
    filename: Option<&str>,
    data: &[u8],
    keys: &Keys,
    max_bytes: usize,
) -> Option<Vec<u8>> {
    let binary = filename.is_some_and(|n| {
        let n = n.to_ascii_lowercase();
        n.ends_with(".gpg") || n.ends_with(".pgp")
    });
    let armoured = data
        .trim_ascii_start()
        .starts_with(b"-----BEGIN PGP MESSAGE-----");
    if !binary && !armoured {
        return None;
    }
    decrypt(data, keys, max_bytes, |_| Vec::new())
        .ok()
        .map(|(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outer_headers_stay_and_only_the_entitys_content_fields_join_them() {
        let raw = b"From: a@example.org\r\nSubject: ...\r\nContent-Type: multipart/encrypted;\r\n boundary=x\r\nMIME-Version: 1.0\r\n\r\nbody";
        let entity = b"Content-Type: text/plain; protected-headers=\"v1\"\r\nSubject: inner\r\n\r\nhello\r\n";
        let out = String::from_utf8(rebuild(raw, entity)).unwrap();
        assert_eq!(
            out,
            "From: a@example.org\r\nSubject: ...\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; protected-headers=\"v1\"\r\n\r\nhello\r\n"
        );
        let bare = String::from_utf8(rebuild(raw, b"just text\r\n")).unwrap();
        assert!(
            bare.ends_with("Content-Type: text/plain; charset=utf-8\r\n\r\njust text\r\n"),
            "{bare}"
        );
    }

    #[test]
    fn an_autocrypt_header_for_another_address_is_ignored() {
        assert!(autocrypt_key("addr=a@example.org; keydata=AAAA", Some("b@example.org")).is_none());
        assert!(autocrypt_key("addr=a@example.org; keydata=AAAA", None).is_none());
    }

    #[test]
    fn encrypted_attachment_names_lose_their_suffix() {
        assert_eq!(decrypted_name("poc.py.gpg"), "poc.py");
        assert_eq!(decrypted_name("log.txt.ASC"), "log.txt");
        assert_eq!(decrypted_name(".gpg"), ".gpg");
        assert_eq!(decrypted_name("notes.txt"), "notes.txt");
    }

    #[test]
    fn a_footer_after_the_armour_is_cut_off() {
        let data = b"junk\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nabc\r\n-----END PGP MESSAGE-----\r\n--\r\nfooter";
        assert_eq!(
            armour_block(data, "MESSAGE").unwrap(),
            b"-----BEGIN PGP MESSAGE-----\r\n\r\nabc\r\n-----END PGP MESSAGE-----"
        );
    }
}
