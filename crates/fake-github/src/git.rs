//! A per-repository Git object store behind the Git Data API: blobs, trees, commits and
//! refs with real git object SHA-1s (so posting the same content twice gives the same
//! SHA, as on GitHub), and the contents view of a ref.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

/// What a Git Data operation answers: status and body, or status and message.
pub(crate) type GitResult = Result<(u16, Value), (u16, String)>;

/// Git's object kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Blob,
    Tree,
    Commit,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::Tree => "tree",
            Kind::Commit => "commit",
        }
    }
}

/// One entry of a tree object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// As the API spells it: `100644`, `100755`, `040000`, `160000`, `120000`.
    mode: String,
    kind: Kind,
    sha: String,
}

/// A commit's author or committer line.
#[derive(Debug, Clone)]
pub(crate) struct Signature {
    name: String,
    email: String,
    date: DateTime<FixedOffset>,
}

#[derive(Debug, Clone)]
pub(crate) struct Commit {
    tree: String,
    parents: Vec<String>,
    author: Signature,
    committer: Signature,
    message: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Object {
    Blob(Arc<[u8]>),
    /// Entries by name (a name never contains `/`).
    Tree(BTreeMap<String, Entry>),
    Commit(Commit),
}

/// One repository's objects and refs.
#[derive(Debug, Default)]
pub(crate) struct Store {
    objects: HashMap<String, Object>,
    /// Full names (`refs/heads/main`) to commit SHAs.
    pub(crate) refs: BTreeMap<String, String>,
}

fn sha1_hex(kind: Kind, content: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("{} {}\0", kind.as_str(), content.len()).as_bytes());
    hasher.update(content);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Git's object id of a blob with this content (`git hash-object`).
pub fn blob_sha(content: &[u8]) -> String {
    sha1_hex(Kind::Blob, content)
}

fn hex_to_bytes(sha: &str) -> Vec<u8> {
    (0..sha.len())
        .step_by(2)
        .filter_map(|i| {
            sha.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

fn is_sha(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The raw tree object: entries in git's order (a tree sorts as if named `name/`).
fn tree_bytes(entries: &BTreeMap<String, Entry>) -> Vec<u8> {
    let mut sorted: Vec<(&String, &Entry)> = entries.iter().collect();
    let key = |(name, e): &(&String, &Entry)| {
        let mut k = name.as_bytes().to_vec();
        if e.kind == Kind::Tree {
            k.push(b'/');
        }
        k
    };
    sorted.sort_by_key(key);
    let mut out = Vec::new();
    for (name, entry) in sorted {
        let mode = entry.mode.trim_start_matches('0');
        out.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        out.extend_from_slice(&hex_to_bytes(&entry.sha));
    }
    out
}

fn signature_line(s: &Signature) -> String {
    format!(
        "{} <{}> {} {}",
        s.name,
        s.email,
        s.date.timestamp(),
        s.date.format("%z")
    )
}

fn commit_bytes(c: &Commit) -> Vec<u8> {
    let mut text = format!("tree {}\n", c.tree);
    for p in &c.parents {
        text.push_str(&format!("parent {p}\n"));
    }
    text.push_str(&format!("author {}\n", signature_line(&c.author)));
    text.push_str(&format!("committer {}\n", signature_line(&c.committer)));
    text.push('\n');
    text.push_str(&c.message);
    text.into_bytes()
}

/// Base64 as GitHub returns it: wrapped at 60 characters, each line ending in `\n`.
fn wrapped_base64(bytes: &[u8]) -> String {
    let flat = STANDARD.encode(bytes);
    let mut out = String::with_capacity(flat.len() + flat.len() / 60 + 1);
    for chunk in flat.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Where the JSON links point: `{api}/repos/{full_name}`.
pub(crate) struct Urls<'a> {
    pub(crate) api: &'a str,
    pub(crate) full_name: &'a str,
}

impl Urls<'_> {
    fn git(&self, what: &str, sha: &str) -> String {
        format!("{}/repos/{}/git/{what}/{sha}", self.api, self.full_name)
    }
}

fn node_id(prefix: &str, sha: &str) -> String {
    format!("{prefix}_fake{}", &sha[..sha.len().min(16)])
}

fn fail(status: u16, message: impl Into<String>) -> (u16, String) {
    (status, message.into())
}

/// A leaf of a flattened tree: a file (or submodule, symlink) at a full path.
type Flat = BTreeMap<String, Entry>;

impl Store {
    fn put(&mut self, kind: Kind, bytes: &[u8], object: Object) -> String {
        let sha = sha1_hex(kind, bytes);
        self.objects.entry(sha.clone()).or_insert(object);
        sha
    }

    /// Stores a blob; the same content gives the same SHA.
    pub(crate) fn put_blob(&mut self, content: Vec<u8>) -> String {
        let sha = blob_sha(&content);
        self.objects
            .entry(sha.clone())
            .or_insert_with(|| Object::Blob(content.into()));
        sha
    }

    fn put_tree(&mut self, entries: BTreeMap<String, Entry>) -> String {
        let bytes = tree_bytes(&entries);
        self.put(Kind::Tree, &bytes, Object::Tree(entries))
    }

    fn kind_of(&self, sha: &str) -> Option<Kind> {
        self.objects.get(sha).map(|o| match o {
            Object::Blob(_) => Kind::Blob,
            Object::Tree(_) => Kind::Tree,
            Object::Commit(_) => Kind::Commit,
        })
    }

    fn blob(&self, sha: &str) -> Option<&Arc<[u8]>> {
        match self.objects.get(sha) {
            Some(Object::Blob(b)) => Some(b),
            _ => None,
        }
    }

    fn tree(&self, sha: &str) -> Option<&BTreeMap<String, Entry>> {
        match self.objects.get(sha) {
            Some(Object::Tree(t)) => Some(t),
            _ => None,
        }
    }

    fn commit(&self, sha: &str) -> Option<&Commit> {
        match self.objects.get(sha) {
            Some(Object::Commit(c)) => Some(c),
            _ => None,
        }
    }

    /// Every non-tree entry under a tree, by full path.
    fn flatten(&self, tree_sha: &str, prefix: &str, out: &mut Flat) {
        let Some(tree) = self.tree(tree_sha) else {
            return;
        };
        for (name, entry) in tree {
            let path = format!("{prefix}{name}");
            if entry.kind == Kind::Tree {
                self.flatten(&entry.sha, &format!("{path}/"), out);
            } else {
                out.insert(path, entry.clone());
            }
        }
    }

    /// Writes the nested trees for a flattened file list; returns the root tree SHA.
    fn build(&mut self, flat: &Flat) -> String {
        let mut here: BTreeMap<String, Entry> = BTreeMap::new();
        let mut dirs: BTreeMap<String, Flat> = BTreeMap::new();
        for (path, entry) in flat {
            match path.split_once('/') {
                Some((dir, rest)) => {
                    dirs.entry(dir.to_owned())
                        .or_default()
                        .insert(rest.to_owned(), entry.clone());
                }
                None => {
                    here.insert(path.clone(), entry.clone());
                }
            }
        }
        for (dir, files) in dirs {
            let sha = self.build(&files);
            here.insert(
                dir,
                Entry {
                    mode: "040000".into(),
                    kind: Kind::Tree,
                    sha,
                },
            );
        }
        self.put_tree(here)
    }

    fn blob_json(&self, urls: &Urls<'_>, sha: &str) -> Value {
        json!({"url": urls.git("blobs", sha), "sha": sha})
    }

    /// `POST git/blobs`: `body` already validated against the schema.
    pub(crate) fn create_blob(&mut self, urls: &Urls<'_>, body: &Value, max: usize) -> GitResult {
        let content = body["content"].as_str().unwrap_or_default();
        let bytes = match body
            .get("encoding")
            .and_then(Value::as_str)
            .unwrap_or("utf-8")
        {
            "utf-8" | "utf8" => content.as_bytes().to_vec(),
            "base64" => {
                let compact: String = content.split_ascii_whitespace().collect();
                STANDARD
                    .decode(compact)
                    .map_err(|_| fail(422, "content is not valid Base64"))?
            }
            other => {
                return Err(fail(
                    422,
                    format!("encoding must be utf-8 or base64, not {other:?}"),
                ));
            }
        };
        if bytes.len() > max {
            return Err(fail(
                422,
                format!("content is too large (maximum is {max} bytes)"),
            ));
        }
        let sha = self.put_blob(bytes);
        Ok((201, self.blob_json(urls, &sha)))
    }

    /// `GET git/blobs/{sha}`.
    pub(crate) fn get_blob(&self, urls: &Urls<'_>, sha: &str) -> GitResult {
        let blob = self.blob(sha).ok_or_else(|| fail(404, "Not Found"))?;
        Ok((
            200,
            json!({
                "content": wrapped_base64(blob),
                "encoding": "base64",
                "url": urls.git("blobs", sha),
                "sha": sha,
                "size": blob.len(),
                "node_id": node_id("B", sha),
            }),
        ))
    }

    fn tree_json(&self, urls: &Urls<'_>, sha: &str, recursive: bool) -> Value {
        let mut entries = Vec::new();
        let mut walk = Vec::new();
        walk.push((sha.to_owned(), String::new()));
        while let Some((tree_sha, prefix)) = walk.pop() {
            let Some(tree) = self.tree(&tree_sha) else {
                continue;
            };
            for (name, entry) in tree {
                let path = format!("{prefix}{name}");
                let mut item = json!({
                    "path": path,
                    "mode": entry.mode,
                    "type": entry.kind.as_str(),
                    "sha": entry.sha,
                });
                match entry.kind {
                    Kind::Blob => {
                        item["size"] = json!(self.blob(&entry.sha).map_or(0, |b| b.len()));
                        item["url"] = json!(urls.git("blobs", &entry.sha));
                    }
                    Kind::Tree => {
                        item["url"] = json!(urls.git("trees", &entry.sha));
                        if recursive {
                            walk.push((entry.sha.clone(), format!("{path}/")));
                        }
                    }
                    Kind::Commit => {}
                }
                entries.push(item);
            }
        }
        if recursive {
            entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        }
        json!({"sha": sha, "url": urls.git("trees", sha), "tree": entries, "truncated": false})
    }

    /// `POST git/trees`.
    pub(crate) fn create_tree(&mut self, urls: &Urls<'_>, body: &Value, max: usize) -> GitResult {
        let mut flat = Flat::new();
        if let Some(base) = body.get("base_tree").and_then(Value::as_str) {
            if self.tree(base).is_none() {
                return Err(fail(422, "base_tree is not a valid tree oid"));
            }
            self.flatten(base, "", &mut flat);
        }
        for item in body["tree"].as_array().into_iter().flatten() {
            let path = item.get("path").and_then(Value::as_str).unwrap_or_default();
            if path.is_empty()
                || path.starts_with('/')
                || path.ends_with('/')
                || path
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == "..")
            {
                return Err(fail(422, format!("tree.path {path:?} is invalid")));
            }
            let mode = item.get("mode").and_then(Value::as_str).unwrap_or("100644");
            let kind = match item.get("type").and_then(Value::as_str) {
                Some("tree") => Kind::Tree,
                Some("commit") => Kind::Commit,
                _ => Kind::Blob,
            };
            let content = item.get("content").and_then(Value::as_str);
            let sha = item.get("sha");
            if content.is_some() && sha.is_some() {
                return Err(fail(
                    422,
                    "Use either tree.sha or content to specify the contents of the entry, not both",
                ));
            }
            // Anything at or below `path` goes: a new entry replaces a file or directory.
            let below = format!("{path}/");
            flat.retain(|p, _| p != path && !p.starts_with(&below));
            // A file in place of a directory prefix replaces the file.
            let mut prefix = String::new();
            for segment in path.split('/') {
                if !prefix.is_empty() {
                    flat.remove(prefix.trim_end_matches('/'));
                }
                prefix.push_str(segment);
                prefix.push('/');
            }
            let sha = match (content, sha) {
                (Some(text), _) => {
                    if text.len() > max {
                        return Err(fail(422, "content is too large"));
                    }
                    self.put_blob(text.as_bytes().to_vec())
                }
                (None, Some(Value::String(sha))) => {
                    let ok = match kind {
                        Kind::Commit => is_sha(sha),
                        k => self.kind_of(sha) == Some(k),
                    };
                    if !ok {
                        return Err(fail(
                            422,
                            format!("tree.sha {sha} is not a valid {}", kind.as_str()),
                        ));
                    }
                    sha.clone()
                }
                // `sha: null` deletes the path (done above).
                (None, Some(Value::Null)) => continue,
                (None, _) => {
                    return Err(fail(422, "tree.sha or content must be given"));
                }
            };
            if kind == Kind::Tree {
                self.flatten(&sha, &below, &mut flat);
            } else {
                flat.insert(
                    path.to_owned(),
                    Entry {
                        mode: mode.to_owned(),
                        kind,
                        sha,
                    },
                );
            }
        }
        let sha = self.build(&flat);
        Ok((201, self.tree_json(urls, &sha, false)))
    }

    /// `GET git/trees/{sha}`.
    pub(crate) fn get_tree(&self, urls: &Urls<'_>, sha: &str, recursive: bool) -> GitResult {
        if self.tree(sha).is_none() {
            return Err(fail(404, "Not Found"));
        }
        Ok((200, self.tree_json(urls, sha, recursive)))
    }

    fn commit_json(&self, urls: &Urls<'_>, sha: &str) -> Value {
        let Some(c) = self.commit(sha) else {
            return Value::Null;
        };
        let person = |s: &Signature| {
            json!({
                "name": s.name,
                "email": s.email,
                "date": s.date.with_timezone(&Utc).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            })
        };
        json!({
            "sha": sha,
            "node_id": node_id("C", sha),
            "url": urls.git("commits", sha),
            "html_url": format!("https://github.com/{}/commit/{sha}", urls.full_name),
            "author": person(&c.author),
            "committer": person(&c.committer),
            "message": c.message,
            "tree": {"sha": c.tree, "url": urls.git("trees", &c.tree)},
            "parents": c.parents.iter().map(|p| json!({
                "sha": p,
                "url": urls.git("commits", p),
                "html_url": format!("https://github.com/{}/commit/{p}", urls.full_name),
            })).collect::<Vec<_>>(),
            "verification": {
                "verified": false,
                "reason": "unsigned",
                "signature": null,
                "payload": null,
                "verified_at": null,
            },
        })
    }

    /// `POST git/commits`; `default_author` is the token's user (`name`, `email`).
    pub(crate) fn create_commit(
        &mut self,
        urls: &Urls<'_>,
        body: &Value,
        default_author: (&str, &str),
        now: DateTime<Utc>,
    ) -> GitResult {
        let tree = body["tree"].as_str().unwrap_or_default().to_owned();
        if self.tree(&tree).is_none() {
            return Err(fail(422, "Tree SHA does not exist"));
        }
        let parents: Vec<String> = body
            .get("parents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        if parents.iter().any(|p| self.commit(p).is_none()) {
            return Err(fail(
                422,
                "Parent SHA does not exist or is not a commit object",
            ));
        }
        let signature = |v: Option<&Value>, fallback: Option<&Signature>| -> Signature {
            let date = v
                .and_then(|v| v.get("date"))
                .and_then(Value::as_str)
                .and_then(|d| DateTime::parse_from_rfc3339(d).ok());
            match (v, fallback) {
                (Some(v), _) => Signature {
                    name: v["name"].as_str().unwrap_or_default().to_owned(),
                    email: v["email"].as_str().unwrap_or_default().to_owned(),
                    date: date.unwrap_or_else(|| now.fixed_offset()),
                },
                (None, Some(f)) => f.clone(),
                (None, None) => Signature {
                    name: default_author.0.to_owned(),
                    email: default_author.1.to_owned(),
                    date: now.fixed_offset(),
                },
            }
        };
        let author = signature(body.get("author"), None);
        let committer = signature(body.get("committer"), Some(&author));
        let commit = Commit {
            tree,
            parents,
            author,
            committer,
            message: body["message"].as_str().unwrap_or_default().to_owned(),
        };
        let bytes = commit_bytes(&commit);
        let sha = self.put(Kind::Commit, &bytes, Object::Commit(commit));
        Ok((201, self.commit_json(urls, &sha)))
    }

    /// `GET git/commits/{sha}`.
    pub(crate) fn get_commit(&self, urls: &Urls<'_>, sha: &str) -> GitResult {
        if self.commit(sha).is_none() {
            return Err(fail(404, "Not Found"));
        }
        Ok((200, self.commit_json(urls, sha)))
    }

    fn ref_json(&self, urls: &Urls<'_>, name: &str, sha: &str) -> Value {
        let kind = self.kind_of(sha).unwrap_or(Kind::Commit);
        json!({
            "ref": name,
            "node_id": node_id("REF", sha),
            "url": format!("{}/repos/{}/git/{name}", urls.api, urls.full_name),
            "object": {
                "type": kind.as_str(),
                "sha": sha,
                "url": urls.git(&format!("{}s", kind.as_str()), sha),
            },
        })
    }

    /// `POST git/refs`.
    pub(crate) fn create_ref(&mut self, urls: &Urls<'_>, body: &Value) -> GitResult {
        let name = body["ref"].as_str().unwrap_or_default();
        let sha = body["sha"].as_str().unwrap_or_default();
        if !name.starts_with("refs/")
            || name.matches('/').count() < 2
            || name.ends_with('/')
            || name.contains("..")
            || name.contains("//")
        {
            return Err(fail(422, format!("{name} is not a valid ref name.")));
        }
        if self.kind_of(sha).is_none() {
            return Err(fail(422, "Object does not exist"));
        }
        if self.refs.contains_key(name) {
            return Err(fail(422, "Reference already exists"));
        }
        self.refs.insert(name.to_owned(), sha.to_owned());
        Ok((201, self.ref_json(urls, name, sha)))
    }

    fn is_ancestor(&self, ancestor: &str, of: &str) -> bool {
        let mut stack = vec![of.to_owned()];
        let mut seen = std::collections::HashSet::new();
        while let Some(sha) = stack.pop() {
            if sha == ancestor {
                return true;
            }
            if !seen.insert(sha.clone()) {
                continue;
            }
            if let Some(c) = self.commit(&sha) {
                stack.extend(c.parents.iter().cloned());
            }
        }
        false
    }

    /// `PATCH git/refs/{ref}` (`short` without `refs/`).
    pub(crate) fn update_ref(&mut self, urls: &Urls<'_>, short: &str, body: &Value) -> GitResult {
        let name = format!("refs/{short}");
        let sha = body["sha"].as_str().unwrap_or_default();
        let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
        let Some(current) = self.refs.get(&name).cloned() else {
            return Err(fail(422, "Reference does not exist"));
        };
        if self.kind_of(sha).is_none() {
            return Err(fail(422, "Object does not exist"));
        }
        if !force && !self.is_ancestor(&current, sha) {
            return Err(fail(422, "Update is not a fast forward"));
        }
        self.refs.insert(name.clone(), sha.to_owned());
        Ok((200, self.ref_json(urls, &name, sha)))
    }

    /// `DELETE git/refs/{ref}`.
    pub(crate) fn delete_ref(&mut self, short: &str) -> GitResult {
        match self.refs.remove(&format!("refs/{short}")) {
            Some(_) => Ok((204, Value::Null)),
            None => Err(fail(422, "Reference does not exist")),
        }
    }

    /// `GET git/ref/{ref}`.
    pub(crate) fn get_ref(&self, urls: &Urls<'_>, short: &str) -> GitResult {
        let name = format!("refs/{short}");
        match self.refs.get(&name) {
            Some(sha) => Ok((200, self.ref_json(urls, &name, sha))),
            None => Err(fail(404, "Not Found")),
        }
    }

    /// `GET git/matching-refs/{ref}`.
    pub(crate) fn matching_refs(&self, urls: &Urls<'_>, short: &str) -> GitResult {
        let prefix = format!("refs/{short}");
        let list: Vec<Value> = self
            .refs
            .range(prefix.clone()..)
            .take_while(|(name, _)| name.starts_with(&prefix))
            .map(|(name, sha)| self.ref_json(urls, name, sha))
            .collect();
        Ok((200, Value::Array(list)))
    }

    /// A branch, tag, `heads/x` style name or commit SHA, to a commit SHA.
    pub(crate) fn resolve(&self, reference: &str) -> Option<String> {
        let name = reference.strip_prefix("refs/").unwrap_or(reference);
        for candidate in [
            format!("refs/heads/{name}"),
            format!("refs/tags/{name}"),
            format!("refs/{name}"),
        ] {
            if let Some(sha) = self.refs.get(&candidate) {
                return Some(sha.clone());
            }
        }
        self.commit(reference).map(|_| reference.to_owned())
    }

    /// Every file of a commit, by path, with its content.
    pub(crate) fn files(&self, commit_sha: &str) -> BTreeMap<String, Arc<[u8]>> {
        let mut flat = Flat::new();
        if let Some(c) = self.commit(commit_sha) {
            self.flatten(&c.tree, "", &mut flat);
        }
        flat.into_iter()
            .filter_map(|(path, e)| self.blob(&e.sha).map(|b| (path, Arc::clone(b))))
            .collect()
    }

    /// `GET contents/{path}?ref=`: a file object, or a directory's entries.
    pub(crate) fn contents(
        &self,
        urls: &Urls<'_>,
        path: &str,
        reference: Option<&str>,
        default_branch: &str,
    ) -> GitResult {
        if self.refs.is_empty() {
            return Err(fail(404, "This repository is empty."));
        }
        let wanted = reference.unwrap_or(default_branch);
        let commit = self
            .resolve(wanted)
            .ok_or_else(|| fail(404, format!("No commit found for the ref {wanted}")))?;
        let root = self
            .commit(&commit)
            .map(|c| c.tree.clone())
            .ok_or_else(|| fail(404, "Not Found"))?;
        let path = path.trim_matches('/');
        let mut current = Entry {
            mode: "040000".into(),
            kind: Kind::Tree,
            sha: root,
        };
        if !path.is_empty() {
            for segment in path.split('/') {
                let next = self
                    .tree(&current.sha)
                    .filter(|_| current.kind == Kind::Tree)
                    .and_then(|t| t.get(segment))
                    .cloned()
                    .ok_or_else(|| fail(404, "Not Found"))?;
                current = next;
            }
        }
        let item = |item_path: &str, entry: &Entry, with_content: bool| -> Value {
            let name = item_path.rsplit('/').next().unwrap_or(item_path);
            let kind = match (entry.kind, entry.mode.as_str()) {
                (Kind::Tree, _) => "dir",
                (Kind::Commit, _) => "submodule",
                (_, "120000") => "symlink",
                _ => "file",
            };
            let size = self.blob(&entry.sha).map_or(0, |b| b.len());
            let self_url = format!(
                "{}/repos/{}/contents/{item_path}?ref={wanted}",
                urls.api, urls.full_name
            );
            let git_url = urls.git(if kind == "dir" { "trees" } else { "blobs" }, &entry.sha);
            let html_url = format!(
                "https://github.com/{}/{}/{wanted}/{item_path}",
                urls.full_name,
                if kind == "dir" { "tree" } else { "blob" }
            );
            let download_url = (kind == "file").then(|| {
                format!(
                    "https://raw.githubusercontent.com/{}/{wanted}/{item_path}",
                    urls.full_name
                )
            });
            let mut out = json!({
                "type": kind,
                "size": size,
                "name": name,
                "path": item_path,
                "sha": entry.sha,
                "url": self_url,
                "git_url": git_url,
                "html_url": html_url,
                "download_url": download_url,
                "_links": {"self": self_url, "git": git_url, "html": html_url},
            });
            if with_content && kind == "file" {
                let blob = self.blob(&entry.sha).map(|b| &b[..]).unwrap_or_default();
                // Over 1 MB GitHub leaves the content out (`encoding: none`).
                if blob.len() > 1024 * 1024 {
                    out["content"] = json!("");
                    out["encoding"] = json!("none");
                } else {
                    out["content"] = json!(wrapped_base64(blob));
                    out["encoding"] = json!("base64");
                }
            }
            if kind == "symlink" {
                let target = self.blob(&entry.sha).map(|b| &b[..]).unwrap_or_default();
                out["target"] = json!(String::from_utf8_lossy(target));
            }
            out
        };
        if current.kind == Kind::Tree {
            let entries: Vec<Value> = self
                .tree(&current.sha)
                .into_iter()
                .flatten()
                .map(|(name, entry)| {
                    let p = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}/{name}")
                    };
                    item(&p, entry, false)
                })
                .collect();
            return Ok((200, Value::Array(entries)));
        }
        Ok((200, item(path, &current, true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_are_gits() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            blob_sha(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        // The empty tree every git knows.
        let mut store = Store::default();
        assert_eq!(
            store.put_tree(BTreeMap::new()),
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        );
    }
}
